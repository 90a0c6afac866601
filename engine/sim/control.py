"""The simulator's own control API for tests and demos (docs/kis-simulator.md): stats and faults."""

from __future__ import annotations

import logging
import time
from datetime import datetime

from aiohttp import web

from engine.sim.feed import send_notices
from engine.sim.state import Session, SimState
from engine.sim.ws import STATE

log = logging.getLogger(__name__)

_DEFAULT_MALFORMED = "0|H0STCNT0|003|005930^093000^71000"  # 3 records promised, 3 fields sent


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].snapshot())


def _targets(state: SimState, body: dict) -> list[Session]:
    """Sessions a fault applies to: all, or those named by `session` id."""
    wanted = body.get("session")
    return [s for s in state.sessions.values() if wanted is None or s.id == wanted]


async def fault(request: web.Request) -> web.Response:
    """POST {"kind": ...}: drop | stall | malformed | pause_symbol | reject_next | expire_tokens |
    forget_tokens.

    drop          {"session"?}: cut the socket(s) without a close frame
    stall         {"seconds", "session"?}: send nothing, not even PINGPONG, for N seconds
    malformed     {"frame"?, "session"?}: send a broken data frame
    pause_symbol  {"symbol", "seconds"}: a gap — no ticks for the symbol for N seconds
    reject_next   {"count"?: 1, "mode"?: "http" | "in_use"}: refuse the next connection(s),
                  at the handshake (HTTP 503) or on its first subscribe (OPSP8996)
    expire_tokens {}: every issued access token is past its lifetime (REST answers EGW00123)
    forget_tokens {}: the server forgets every issued access token (REST answers EGW00121)
    """
    state = request.app[STATE]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return web.json_response({"error": "JSON object body required"}, status=400)
    kind = body.get("kind")
    affected = 0
    try:
        if kind == "drop":
            for session in _targets(state, body):
                session.abort()
                affected += 1
        elif kind == "stall":
            until = time.monotonic() + float(body["seconds"])
            for session in _targets(state, body):
                session.stalled_until = until
                affected += 1
        elif kind == "malformed":
            frame = str(body.get("frame") or _DEFAULT_MALFORMED)
            for session in _targets(state, body):
                affected += await state.send(session, frame)
        elif kind == "pause_symbol":
            state.paused[str(body["symbol"])] = time.monotonic() + float(body["seconds"])
            affected = 1
        elif kind == "reject_next":
            count = int(body.get("count", 1))
            if body.get("mode", "http") == "in_use":
                state.reject_next_in_use += count
            else:
                state.reject_next_http += count
            affected = count
        elif kind == "expire_tokens":
            affected = state.expire_tokens()
        elif kind == "forget_tokens":
            affected = state.forget_tokens()
        else:
            return web.json_response({"error": f"unknown fault kind {kind!r}"}, status=400)
    except (KeyError, TypeError, ValueError) as exc:
        return web.json_response({"error": f"bad fault body: {exc}"}, status=400)
    log.info("sim fault %s applied (%d)", kind, affected)
    return web.json_response({"kind": kind, "affected": affected})


async def notice(request: web.Request) -> web.Response:
    """POST {"hts_id"?}: send one encrypted execution notice to notice subscribers now."""
    state = request.app[STATE]
    try:
        body = await request.json()
    except ValueError:
        body = {}
    hts_id = body.get("hts_id") if isinstance(body, dict) else None
    return web.json_response({"sent": await send_notices(state, hts_id)})


async def clock_now(request: web.Request) -> web.Response:
    """GET: the simulated present, for a demo stack whose candle service keeps this clock."""
    sim = request.app[STATE].clock.now()
    return web.json_response(
        {"sim_time": sim.kst.isoformat(), "epoch": sim.kst.timestamp(), "is_open": sim.is_open}
    )


async def clock(request: web.Request) -> web.Response:
    """POST {"start"?: ISO KST time, "speed"?: x}: re-anchor the simulated clock."""
    state = request.app[STATE]
    try:
        body = await request.json()
        start = datetime.fromisoformat(body["start"]) if body.get("start") else None
        speed = float(body["speed"]) if body.get("speed") is not None else None
        state.clock.reset(start=start, speed=speed)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return web.json_response({"error": f"bad clock body: {exc}"}, status=400)
    return web.json_response({"sim_time": state.clock.now().kst.isoformat()})
