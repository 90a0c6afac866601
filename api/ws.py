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
from importlib import resources

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, HTMLResponse
from starlette.websockets import WebSocketDisconnect

from actors.session import Lease, session_pool
from api import chart_library
from api.hub import Hub, replica_hub
from api.security import bearer_token, token_matches
from engine.channels import encode, parse_channels
from engine.config import get_settings
from engine.errors import BadRequestError, KisrayError, NoDataFoundError, UnauthorizedError
from engine.fanout import Outbox

log = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE = 16 * 1024
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


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
    """One connected client: its reader, its writer and its lease."""

    def __init__(self, websocket: WebSocket, hub: Hub, lease: Lease, batch: bool = False) -> None:
        self.ws = websocket
        self.batch = batch  # one JSON array per window instead of one frame per message
        self.hub = hub
        self.lease = lease
        self.session = lease.session
        self.outbox = Outbox(lease.session_id)

    async def run(self) -> None:
        self.hub.attach(self.outbox, self.lease.session_id)
        self.outbox.offer(None, encode({"type": "session", "id": self.lease.session_id}))
        if self.lease.channels:
            await self._subscribe(list(self.lease.channels), resumed=True)
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write())
        overflow = asyncio.create_task(self.outbox.overflow.wait())
        try:
            await asyncio.wait({reader, writer, overflow}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer, overflow):
                task.cancel()
            await self.hub.detach(self.outbox)
        if self.outbox.overflowed:
            await self._close_slow()

    async def _close_slow(self) -> None:
        log.info("client %s could not keep up; disconnecting", self.lease.session_id)
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
                text = await self.ws.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            try:
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
        except ValueError as exc:
            raise BadRequestError(f"not JSON: {exc.msg}") from None
        if not isinstance(message, dict):
            raise BadRequestError("a message is a JSON object with an 'op'")
        op = message.get("op")
        if op == "ping":
            self.outbox.offer(None, encode({"type": "pong"}))
        elif op == "subscribe":
            await self._subscribe(message.get("channels"))
        elif op == "unsubscribe":
            gone, _held = await self.session.unsubscribe.remote(message.get("channels"))
            await self.hub.unsubscribe(self.outbox, list(parse_channels(gone)) if gone else [])
            self.outbox.offer(None, encode({"type": "unsubscribed", "channels": gone}))
        else:
            raise BadRequestError(f"unknown op {op!r}; use subscribe, unsubscribe or ping")

    async def _subscribe(self, names: object, resumed: bool = False) -> None:
        if resumed:
            added, held = list(names), list(names)  # type: ignore[arg-type]
        else:
            added, held = await self.session.subscribe.remote(names)
        if added:
            try:
                await self.hub.subscribe(self.outbox, list(parse_channels(added)))
            except Exception:
                await self.session.unsubscribe.remote(added)  # keep the session truthful
                raise
        self.outbox.offer(None, encode({"type": "subscribed", "channels": held}))


_pool: object | None = None


def replica_session_pool() -> object:
    """The named pool's handle, looked up once per replica process."""
    global _pool
    if _pool is None:
        _pool = session_pool(get_settings().ws_session_pool)
    return _pool


async def serve_socket(websocket: WebSocket) -> None:
    try:
        check_access(websocket)
    except UnauthorizedError as exc:
        await websocket.accept()
        await websocket.send_text(error_message(exc.code, exc.message))
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    pool = replica_session_pool()
    try:
        hub = await replica_hub(pool=pool)
        resume = websocket.query_params.get("resume")
        if resume:
            lease = await pool.acquire.remote(uuid.uuid4().hex, hub.replica_id, resume)
        else:
            lease = await hub.take_lease(uuid.uuid4().hex)
    except Exception as exc:
        log.warning("live data unavailable: %s", exc)
        with contextlib.suppress(Exception):
            await websocket.send_text(
                error_message("UPSTREAM_UNAVAILABLE", "live data is not available right now")
            )
            await websocket.close(code=TRY_AGAIN_LATER)
        return
    batch = websocket.query_params.get("batch", "") in ("1", "true")
    client = ClientSocket(websocket, hub, lease, batch)
    try:
        await client.run()
    finally:
        await pool.release.remote(lease.session_id, park=not client.outbox.overflowed)
        with contextlib.suppress(Exception):
            await websocket.close()


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
        hub = await replica_hub(pool=replica_session_pool())
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
