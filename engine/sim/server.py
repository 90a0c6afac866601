"""Assembles the KIS simulator (REST + WebSocket + control API) on one aiohttp server.

handle = await serve_simulator(SimulatorConfig(port=0))   # in-process, e.g. a test
ws_url, rest_url = handle.ws_url, handle.rest_url
await handle.close()

run_simulator(SimulatorConfig())                          # blocking, for the CLI
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from aiohttp import web

from engine.sim import control, rest
from engine.sim.config import SimulatorConfig
from engine.sim.feed import run_feed, run_notices
from engine.sim.replay import run_replay
from engine.sim.state import SimState
from engine.sim.ws import STATE, websocket_handler

__all__ = ["SimulatorConfig", "SimulatorHandle", "build_app", "run_simulator", "serve_simulator"]

log = logging.getLogger(__name__)

CHART_BASE = "/uapi/domestic-stock/v1/quotations"


def build_app(config: SimulatorConfig) -> web.Application:
    app = web.Application()
    app[STATE] = SimState(config)
    app.add_routes(
        [
            web.get("/", websocket_handler),
            web.get("/tryitout", websocket_handler),
            web.get("/tryitout/{tail:.*}", websocket_handler),
            web.post("/oauth2/Approval", rest.approval),
            web.post("/oauth2/tokenP", rest.token),
            web.get(f"{CHART_BASE}/inquire-time-itemchartprice", rest.today_minutes),
            web.get(f"{CHART_BASE}/inquire-time-dailychartprice", rest.past_minutes),
            web.get(f"{CHART_BASE}/inquire-daily-itemchartprice", rest.daily),
            web.get("/_sim/stats", control.stats),
            web.post("/_sim/fault", control.fault),
            web.post("/_sim/notice", control.notice),
            web.get("/_sim/clock", control.clock_now),
            web.post("/_sim/clock", control.clock),
        ]
    )
    return app


@dataclass
class SimulatorHandle:
    """A running simulator. `port` is the bound port (useful with port=0)."""

    config: SimulatorConfig
    app: web.Application
    runner: web.AppRunner
    port: int
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def state(self) -> SimState:
        return self.app[STATE]

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session in list(self.state.sessions.values()):
            session.abort()
        await self.runner.cleanup()


async def serve_simulator(config: SimulatorConfig) -> SimulatorHandle:
    app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1]
    state = app[STATE]
    if config.replay_path:
        market = asyncio.create_task(run_replay(state, config.replay_path), name="sim-replay")
    else:
        market = asyncio.create_task(run_feed(state), name="sim-feed")
    notices = asyncio.create_task(run_notices(state), name="sim-notices")
    log.info(
        "KIS simulator on %s:%d (%s, seed %d, rate %.1f/s, speed %.1fx)",
        config.host,
        port,
        "replay" if config.replay_path else "synthetic",
        config.seed,
        config.rate,
        config.speed,
    )
    return SimulatorHandle(config, app, runner, port, [market, notices])


def run_simulator(config: SimulatorConfig) -> None:
    """Blocking: run until interrupted (Ctrl-C)."""

    async def main() -> None:
        handle = await serve_simulator(config)
        try:
            await asyncio.Event().wait()
        finally:
            await handle.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
