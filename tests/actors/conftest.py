"""Actor-test fixtures: a KIS simulator that keeps running while test code blocks on Ray.

The simulator runs on its own event loop in a background thread, so a test may call ray.get and
time.sleep freely while Ray actors talk to the simulator over loopback.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import httpx
import pytest

from engine.sim.server import SimulatorConfig, SimulatorHandle, serve_simulator

SIM_START = datetime(2025, 3, 12, 10, 0, 0)  # a Wednesday mid-session


class ThreadedSimulator:
    """serve_simulator() on a private loop in a daemon thread; sync helpers for tests."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="sim")
        self._thread.start()
        self.handle: SimulatorHandle = self._call(serve_simulator(config))
        self._http = httpx.Client(base_url=self.rest_url, timeout=10.0)

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    @property
    def ws_url(self) -> str:
        return self.handle.ws_url

    @property
    def rest_url(self) -> str:
        return self.handle.rest_url

    def stats(self) -> dict:
        return self._http.get("/_sim/stats").json()

    def fault(self, **body: object) -> dict:
        reply = self._http.post("/_sim/fault", json=body)
        reply.raise_for_status()
        return reply.json()

    def registrations(self) -> set[tuple[str, str]]:
        return {(r["tr_id"], r["tr_key"]) for r in self.stats()["registrations"]}

    def close(self) -> None:
        self._http.close()
        self._call(self.handle.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextmanager
def threaded_simulator(**overrides: object) -> Iterator[ThreadedSimulator]:
    options: dict[str, object] = {
        "port": 0,
        "start": SIM_START,
        "speed": 30,
        "notice_interval_s": 0,
        "tick_interval_s": 0.05,
    }
    options.update(overrides)
    sim = ThreadedSimulator(SimulatorConfig(**options))  # type: ignore[arg-type]
    try:
        yield sim
    finally:
        sim.close()


@pytest.fixture
def threaded_sim_factory() -> Callable[..., object]:
    """`with threaded_sim_factory(**config_overrides) as sim:` — sim.ws_url, sim.stats(), …"""
    return threaded_simulator
