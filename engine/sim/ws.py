"""The KIS WebSocket endpoint: registrations, acks, PINGPONG, one session per app key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

from aiohttp import WSMsgType, web

from engine.kis import tr
from engine.kis.control import build_ack, build_pingpong, is_pingpong
from engine.kis.messages import RegistrationError, parse_registration
from engine.sim.state import Session, SimState

log = logging.getLogger(__name__)

STATE: web.AppKey[SimState] = web.AppKey("sim_state", SimState)

_QUOTE_KEY = re.compile(r"^[0-9A-Z]{6,7}$")
_NOTICE_KEY = re.compile(r"^\S{1,16}$")


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if state.reject_next_http > 0:
        state.reject_next_http -= 1
        state.stats.rejected_connections += 1
        return web.Response(status=503, text="connection rejected by fault injection")
    # autoping=False: RFC 6455 PONG frames reach us (a valid PINGPONG echo style).
    ws = web.WebSocketResponse(autoping=False, heartbeat=None, max_msg_size=1 << 20)
    await ws.prepare(request)
    session = state.open_session(ws, request)
    log.info("sim session %d opened from %s", session.id, request.remote)
    pinger = asyncio.create_task(_pingpong(state, session))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _on_text(state, session, msg.data)
            elif msg.type == WSMsgType.PONG:
                _echo(state, session)
            elif msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
            if session.closed:
                break
    finally:
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger
        state.close_session(session)
        log.info("sim session %d closed", session.id)
    return ws


def _echo(state: SimState, session: Session) -> None:
    session.awaiting_echo = False
    state.stats.echoes_received += 1


async def _pingpong(state: SimState, session: Session) -> None:
    """Send PINGPONG every interval; cut a client that has not echoed the previous one."""
    interval = state.config.ping_interval_s
    while not session.closed:
        await asyncio.sleep(interval)
        if session.stalled:
            session.awaiting_echo = False  # a stalled server neither pings nor judges
            continue
        if session.awaiting_echo and time.monotonic() >= session.echo_deadline:
            log.info("sim session %d missed PINGPONG; dropping it", session.id)
            state.stats.dropped_no_echo += 1
            session.abort()
            return
        session.awaiting_echo = True
        session.echo_deadline = time.monotonic() + interval
        if await state.send(session, build_pingpong(state.clock.now().kst)):
            state.stats.pings_sent += 1


async def _on_text(state: SimState, session: Session, text: str) -> None:
    if is_pingpong(text):
        _echo(state, session)
        return
    try:
        req = parse_registration(text)
    except RegistrationError as exc:
        await state.send(session, build_ack("(null)", "", exc.msg_cd))
        return
    app_key = state.approvals.get(req.approval_key)
    if app_key is None:
        await state.send(session, build_ack(req.tr_id, req.tr_key, "OPSP0011"))
        return
    if session.app_key is None:
        refused = state.reject_next_in_use > 0
        if refused:
            state.reject_next_in_use -= 1
        if refused or not state.bind(session, app_key):
            # The second socket is refused; the first keeps its session (kis-protocol §2.3).
            state.stats.rejected_connections += 1
            await state.send(session, build_ack("(null)", req.tr_key, "OPSP8996"))
            session.closed = True
            await session.ws.close()
            return
    key = (req.tr_id, req.tr_key)
    if not req.register:
        code = "OPSP0001" if session.registrations.pop(key, None) is not None else "OPSP0003"
        await state.send(session, build_ack(req.tr_id, req.tr_key, code))
        return
    notice = req.tr_id in tr.NOTICE_TRS
    if req.tr_id not in tr.SUPPORTED_TRS:
        code = "OPSP8991"
    elif not (_NOTICE_KEY if notice else _QUOTE_KEY).match(req.tr_key):
        code = "OPSP8992"
    elif key in session.registrations:
        code = "OPSP0002"
    elif len(session.registrations) >= state.config.max_registrations:
        code = "OPSP0008"
    else:
        code = "OPSP0000"
    if code == "OPSP0000" and notice and state.config.hts_id not in (None, req.tr_key):
        # KIS drops the socket without a close frame on a wrong HTS id (OTA README §5).
        log.info("sim session %d subscribed notices for a foreign HTS id; dropping", session.id)
        session.abort()
        return
    if code == "OPSP0000":
        session.registrations[key] = time.monotonic()
    ok = code in ("OPSP0000", "OPSP0002")
    await state.send(
        session,
        build_ack(
            req.tr_id,
            req.tr_key,
            code,
            aes_key=session.aes_key if ok else None,
            encrypted=notice,
        ),
    )
