"""`WS /ws`: the client protocol (docs/websocket.md) on top of the session actor and the hub.

Per socket: a lease on a pre-warmed SessionActor (control plane: validation, limits, resume), an
Outbox in this replica's hub (data plane), a reader (client ops) and a writer (drains the outbox).
The reader never waits on the writer, so a client that stops reading cannot stall anything: its
outbox fills to its bound and it is disconnected with SLOW_CONSUMER.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from importlib import resources

import ray
from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, HTMLResponse
from starlette.websockets import WebSocketDisconnect

from actors.session import Lease
from api import chart_library
from api.hub import ReplicaHub, replica_hub, session_ops
from api.metrics import WS_CLIENT_MESSAGES
from api.security import bearer_token, token_matches
from engine.config import get_settings
from engine.domain.symbols import is_symbol
from engine.errors import BadRequestError, KisrayError, NoDataFoundError, UnauthorizedError
from engine.live.channels import Channel, channel_names, encode, parse_channels
from engine.live.fanout import Outbox
from engine.live.session_state import SessionLimits, SessionState

log = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE = 16 * 1024
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
# A tab that arrives while a live stack starts (no socket actor yet) waits this long, retrying
# every START_RETRY_S, before it is told UPSTREAM_UNAVAILABLE (docs/websocket.md).
START_WAIT_S = 30.0
START_RETRY_S = 0.25
SESSION_RETRY_S = 0.5  # a lease or replacement the pool could not give is asked again
SESSION_RETRY_MAX_S = 5.0
# A closing socket gives its queued ops this long to reach the actor, then releases anyway:
# the release carries the channels, and the pool parks a lease or replacement still being made.
CLOSE_SYNC_WAIT_S = 1.0
CLIENT_OPS = ("subscribe", "unsubscribe", "ping")  # metric labels; anything else is "other"
BINARY_FRAME = "binary frames are not read: send text frames carrying JSON"


def error_message(code: str, message: str) -> str:
    return encode({"type": "error", "code": code, "message": message})


def _cause(exc: BaseException) -> BaseException:
    return getattr(exc, "cause", None) or exc


def check_access(websocket: WebSocket) -> None:
    """The optional token (query `token=` or `Authorization: Bearer`). The origin was checked
    before the socket got here, by the one policy of REST and `/ws` (api.security)."""
    settings = get_settings()
    given = bearer_token(websocket.headers.get("authorization")) or websocket.query_params.get(
        "token", ""
    )
    if not token_matches(given, settings):
        raise UnauthorizedError("missing or wrong API token")


class ClientSocket:
    """One connected client: its reader, its writer, its session state and its lease.

    The socket applies a client's ops itself, with the session's rules (engine.live.session_state),
    so a tab never waits on an actor; `_keep_session` sends them in order to the session actor,
    which holds the copy a resume (or another replica) reads. A lost actor or pool is replaced
    behind the tab's back."""

    def __init__(
        self,
        websocket: WebSocket,
        hub: ReplicaHub,
        session_id: str,
        lease: Lease | None,
        batch: bool = False,
        last_trades: dict[str, int] | None = None,
        after_session: str | None = None,
    ) -> None:
        self.ws = websocket
        self.batch = batch  # one JSON array per window instead of one frame per message
        self.hub = hub
        self.session_id = session_id
        self.lease = lease  # None until the pool answers: leased in the background
        self.last_trades = last_trades  # a resumed tab's last cum_volume per symbol
        self.after_session = after_session  # an error about the URL, told after `session`
        self.state = SessionState(lease.limits if lease is not None else SessionLimits())
        self.outbox = Outbox(session_id)
        self._to_actor: asyncio.Queue[tuple[str, list[Channel]]] = asyncio.Queue()
        self._adopt_queued = False

    async def run(self) -> None:
        self.hub.attach(self.outbox, self.session_id)
        self.outbox.offer(None, encode({"type": "session", "id": self.session_id}))
        if self.after_session is not None:
            self.outbox.offer(None, self.after_session)
        if self.lease is not None and self.lease.channels:
            await self._subscribe(list(self.lease.channels), resumed=True)
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write())
        overflow = asyncio.create_task(self.outbox.overflow.wait())
        keeper = asyncio.create_task(self._keep_session())
        try:
            await asyncio.wait({reader, writer, overflow}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer, overflow):
                task.cancel()
            try:
                await self.hub.detach(self.outbox)
            finally:
                await self._stop_keeper(keeper)
        if self.outbox.overflowed:
            await self._close_slow()

    async def _stop_keeper(self, keeper: asyncio.Task[None]) -> None:
        """Let the actor catch up briefly, then stop: a resume waits for the release that
        follows, so it must come soon."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._to_actor.join(), CLOSE_SYNC_WAIT_S)
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await keeper

    async def _keep_session(self) -> None:
        """Lease a session actor if the tab has none yet, then keep its copy in step."""
        if self.lease is None:
            self.lease = await self._until_done(
                "lease", lambda: self.hub.take_lease(uuid.uuid4().hex, self.session_id)
            )
            self._to_actor.put_nowait(("replace", self.state.channels()))
        self.hub.watch(self.session_id, self._queue_adopt)
        while True:
            op, channels = await self._to_actor.get()
            try:
                await self._apply(op, channels)
            finally:
                self._to_actor.task_done()

    def _queue_adopt(self) -> None:
        """The pool lost this session: one replacement in the queue is enough (each renewal
        until it is made would report the loss again)."""
        if not self._adopt_queued:
            self._adopt_queued = True
            self._to_actor.put_nowait(("adopt", []))

    async def _apply(self, op: str, channels: list[Channel]) -> None:
        if op == "adopt":
            self._adopt_queued = False
            await self._adopt()
            return
        assert self.lease is not None  # _keep_session leases one before it applies any op
        try:
            await session_ops().apply(self.lease.session, op, channels)
        except ray.exceptions.RayActorError as exc:
            gone = type(exc).__name__
            log.warning("session %s: its actor is gone (%s)", self.session_id, gone)
            await self._adopt()
        except Exception:
            log.exception("session %s: %s on its actor failed", self.session_id, op)

    async def _adopt(self) -> None:
        """A new actor under this session's id, holding what this socket holds now (later ops
        in the queue are then no-ops: subscribe and unsubscribe are idempotent)."""
        self.lease = await self._until_done(
            "replacement",
            lambda: self.hub.replace_session(self.session_id, self.state.channels()),
        )

    async def _until_done(self, what: str, call) -> Lease:
        delay = SESSION_RETRY_S
        while True:
            try:
                return await call()
            except Exception as exc:
                log.warning("session %s: %s failed (%s); retrying", self.session_id, what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, SESSION_RETRY_MAX_S)

    async def _close_slow(self) -> None:
        log.info("client %s could not keep up; disconnecting", self.session_id)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                text = error_message(
                    "SLOW_CONSUMER", f"more than {self.outbox.max_bytes} bytes were waiting"
                )
                await self.ws.send_text(text)
                await self.ws.close(code=TRY_AGAIN_LATER)

    async def _write(self) -> None:
        while True:
            texts = await self.outbox.wait()
            if self.batch and texts:
                # Per-frame costs (proxy, client) dominate bytes: a window goes as one frame.
                await self.ws.send_text("[" + ",".join(texts) + "]")
                continue
            for text in texts:
                await self.ws.send_text(text)

    async def _read(self) -> None:
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            text = message.get("text")
            try:
                if text is None:
                    # receive_text() would close the socket on a binary frame, without a word.
                    raise BadRequestError(BINARY_FRAME)
                await self._handle(text)
            except KisrayError as exc:
                self.outbox.offer(None, error_message(exc.code, exc.message))
            except Exception as exc:
                cause = _cause(exc)
                if isinstance(cause, KisrayError):
                    self.outbox.offer(None, error_message(cause.code, cause.message))
                else:
                    rid = uuid.uuid4().hex
                    log.error("request_id=%s ws op failed", rid, exc_info=exc)
                    self.outbox.offer(None, error_message("INTERNAL_ERROR", f"request_id {rid}"))

    async def _handle(self, text: str) -> None:
        if len(text) > MAX_CLIENT_MESSAGE:
            raise BadRequestError(f"messages are limited to {MAX_CLIENT_MESSAGE} bytes")
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequestError(f"not JSON: {exc.msg}") from None
        if not isinstance(message, dict):
            raise BadRequestError("a message is a JSON object with an 'op'")
        op = message.get("op")
        WS_CLIENT_MESSAGES.labels(op if op in CLIENT_OPS else "other").inc()
        if op == "ping":
            self.outbox.offer(None, encode({"type": "pong"}))
        elif op == "subscribe":
            await self._subscribe(parse_channels(message.get("channels")))
        elif op == "unsubscribe":
            gone, _held = self.state.unsubscribe(parse_channels(message.get("channels")))
            if gone:
                await self.hub.unsubscribe(self.outbox, gone)
                self._to_actor.put_nowait(("unsubscribe", gone))
            names = channel_names(gone)
            self.outbox.offer(None, encode({"type": "unsubscribed", "channels": names}))
        else:
            raise BadRequestError(f"unknown op {op!r}; use subscribe, unsubscribe or ping")

    async def _subscribe(self, channels: Sequence[Channel], resumed: bool = False) -> None:
        """Hold `channels` too (resumed: exactly the lease's own) and start their delivery."""
        if resumed:
            self.state.replace(channels)
            added = held = self.state.channels()
        else:
            added, held = self.state.subscribe(channels)
        ack = encode({"type": "subscribed", "channels": channel_names(held)})
        if not added:
            self.outbox.offer(None, ack)
            return
        try:
            await self.hub.subscribe(self.outbox, added, ack, self.last_trades if resumed else None)
        except Exception:
            self.state.unsubscribe(added)  # keep the session truthful
            raise
        if not resumed:
            self._to_actor.put_nowait(("subscribe", added))


async def _hub_when_ready() -> ReplicaHub:
    """The replica's hub; while a live stack is still starting (no socket actor or session pool
    answers yet) wait for it, up to START_WAIT_S, instead of refusing the tab. A stack that runs
    no live data (KISRAY_LIVE_REQUIRED unset, nothing to wait for) refuses at once."""
    wait_s = START_WAIT_S if get_settings().live_required else 0.0
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            return await replica_hub()
        except Exception as exc:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            log.debug("live data not ready yet (%s); the tab waits", exc)
            await asyncio.sleep(START_RETRY_S)


async def serve_socket(websocket: WebSocket) -> None:
    try:
        check_access(websocket)
    except UnauthorizedError as exc:
        await websocket.accept()
        await websocket.send_text(error_message(exc.code, exc.message))
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    try:
        hub = await _hub_when_ready()
        resume = websocket.query_params.get("resume")
        # A resume needs the pool (the channels to restore); a new tab takes a spare lease or
        # gets its id now and its session actor in the background.
        lease = await hub.resume_lease(uuid.uuid4().hex, resume) if resume else hub.spare_lease()
    except Exception as exc:
        log.warning("live data unavailable: %s", exc)
        with contextlib.suppress(Exception):
            await websocket.send_text(
                error_message("UPSTREAM_UNAVAILABLE", "live data is not available right now")
            )
            await websocket.close(code=TRY_AGAIN_LATER)
        return
    batch = websocket.query_params.get("batch", "") in ("1", "true")
    session_id = lease.session_id if lease is not None else uuid.uuid4().hex
    last_trades: dict[str, int] | None = None
    bad_last: str | None = None
    if resume:
        try:
            last_trades = parse_last_trades(websocket.query_params.get("last", ""))
        except BadRequestError as exc:  # the resume goes on, without the missed trades
            bad_last = error_message(exc.code, exc.message)
    client = ClientSocket(websocket, hub, session_id, lease, batch, last_trades, bad_last)
    try:
        await client.run()
    finally:
        with contextlib.suppress(Exception):  # the pool sweeps a lease nobody renews
            await hub.release_lease(
                session_id, not client.outbox.overflowed, client.state.channels()
            )
        with contextlib.suppress(Exception):
            await websocket.close()


def parse_last_trades(text: str) -> dict[str, int]:
    """`last=005930:1234567,000660:89012`: a resuming tab's last trade (its cum_volume) of each
    symbol; the trades after it are sent first, or a gap marker (docs/websocket.md)."""
    last: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        symbol, _, volume = part.partition(":")
        if not is_symbol(symbol) or not volume.isdigit():
            raise BadRequestError(
                f"last={part!r}: expected SYMBOL:CUM_VOLUME pairs separated by commas"
            )
        last[symbol] = int(volume)
    return last


def demo_page() -> str:
    return resources.files("api").joinpath("static/live.html").read_text(encoding="utf-8")


def install_ws_routes(app: FastAPI) -> None:
    """Add `WS /ws` and the `GET /demo` page to the app (before `@serve.ingress` pickles it)."""

    @app.websocket("/ws")
    async def live(websocket: WebSocket) -> None:
        await serve_socket(websocket)

    @app.get("/ws/stats", include_in_schema=False)
    async def live_stats() -> dict:
        """This replica's hub: sockets, window, batches, deliveries, the fullest outbox."""
        hub = await replica_hub()
        return hub.stats()

    @app.get("/demo", response_class=HTMLResponse, include_in_schema=False)
    async def demo() -> HTMLResponse:
        return HTMLResponse(demo_page())

    @app.get("/demo/lightweight-charts.js", include_in_schema=False)
    async def demo_chart_library() -> FileResponse:
        return FileResponse(
            _chart_library_file(chart_library.BUNDLE_NAME), media_type="text/javascript"
        )

    @app.get("/demo/LICENSE-lightweight-charts", include_in_schema=False)
    async def demo_chart_library_license() -> FileResponse:
        return FileResponse(_chart_library_file("LICENSE"), media_type="text/plain")


def _chart_library_file(name: str):
    if chart_library.bundle_path() is None:
        raise NoDataFoundError(
            f"the chart library is not installed: run `make install` "
            f"(python -m api.chart_library fetches {chart_library.PACKAGE} {chart_library.VERSION})"
        )
    return chart_library.vendor_dir() / name
