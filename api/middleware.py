"""ASGI middleware of the API, outermost first:

1. RequestContext: the request id (the client's `X-Request-ID` or a new one) for the error
   envelope, the response header and every log line written while serving the request; and the
   request's route, status and latency for /metrics.
2. The origin policy (api.security.OriginPolicy): CORS for REST, the same allowlist for `/ws`,
   answered before any token check.
3. RequestLimits: a request target over 8 KiB (414) or headers over 32 KiB (431), answered with
   the error envelope (so a browser still gets CORS headers on it).
4. AccessGuard: the optional bearer token and the request body limit, answered with the error
   envelope.

Plain ASGI classes rather than BaseHTTPMiddleware: they keep WebSocket scopes untouched and the
contextvar set in the task that runs the route.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.errors import REQUEST_ID_KEY, error_response, in_serve_replica, new_request_id
from api.security import OriginPolicy, bearer_token, requires_token, token_matches
from engine.config import get_settings
from engine.errors import (
    HeadersTooLargeError,
    KisrayError,
    PayloadTooLargeError,
    UnauthorizedError,
    UriTooLongError,
)
from engine.logs import current_request_id

logger = logging.getLogger(__name__)

UNMATCHED_ROUTE = "<unmatched>"  # one label for every unknown path: bounded cardinality
MAX_URL_BYTES = 8 * 1024  # path and query, as sent
MAX_HEADER_BYTES = 32 * 1024  # every header line, as sent ("name: value\r\n")
_LOGGED_PATH_CHARS = 200  # an over-long path is cut in the log line, not written whole


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Serve's proxy echoes X-Request-ID itself; a second copy would make the header a list.
        self._echo_header = not in_serve_replica()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = new_request_id(HTTPConnection(scope))  # Request() refuses WebSocket scopes
        scope[REQUEST_ID_KEY] = rid
        token = current_request_id.set(rid)
        if scope["type"] == "websocket":
            try:
                await self.app(scope, receive, send)
            finally:
                current_request_id.reset(token)
            return

        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if self._echo_header and "x-request-id" not in headers:
                    headers.append("X-Request-ID", rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            seconds = time.perf_counter() - started
            metrics.observe_request(template, scope.get("method", "GET"), status, seconds)
            if status >= 400:  # successes stay out of the log; the query string always does
                path = scope["path"]
                if len(path) > _LOGGED_PATH_CHARS:
                    path = f"{path[:_LOGGED_PATH_CHARS]}… ({len(path)} chars)"
                logger.info(
                    "%s %s -> %d in %.1f ms", scope.get("method"), path, status, seconds * 1e3
                )
            # Left set when the route raised: the error handler outside logs under this id.
            if status < 500:
                current_request_id.reset(token)


class RequestLimits:
    """414 / 431 in the envelope for an over-long request target or oversized headers.

    The replica's HTTP server lets such requests through up to its own, larger bound
    (api.ingress.HTTP_SERVER_DEFAULTS), so the answer carries the envelope and X-Request-ID
    instead of the server's plain-text 400.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = request_limit_error(scope)
            if error is not None:
                request = Request(scope)
                response = error_response(request, error.http_status, error.code, error.message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def request_limit_error(scope: Scope) -> KisrayError | None:
    """The limit a request's target or headers break, if any (cheap: lengths only)."""
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    url_bytes = len(raw_path) + (len(query) + 1 if query else 0)
    if url_bytes > MAX_URL_BYTES:
        return UriTooLongError(f"request target of {url_bytes} bytes; the limit is {MAX_URL_BYTES}")
    header_bytes = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    if header_bytes > MAX_HEADER_BYTES:
        return HeadersTooLargeError(
            f"request headers of {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
        )
    return None


class AccessGuard:
    """Token check (when configured) and the body limit, for HTTP requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # /ws checks its own token and message size
            return
        request = Request(scope)
        settings = get_settings()
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if requires_token(path) and not token_matches(
            bearer_token(request.headers.get("authorization")), settings
        ):
            error = UnauthorizedError("missing or wrong API token")
            response = error_response(request, error.http_status, error.code, error.message)
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        declared = request.headers.get("content-length", "")
        limit = settings.max_request_bytes
        if declared.isdigit() and int(declared) > limit:
            await self._too_large(request, limit, scope, receive, send)
            return
        await self.app(scope, _limited(receive, limit), send)

    @staticmethod
    async def _too_large(request: Request, limit: int, scope: Scope, receive, send) -> None:
        error = PayloadTooLargeError(f"request body over {limit} bytes")
        response = error_response(request, error.http_status, error.code, error.message)
        await response(scope, receive, send)


def _limited(receive: Receive, limit: int) -> Receive:
    """Stops a chunked body that grows past the limit (no Content-Length to check up front)."""
    seen = 0

    async def receive_limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLargeError(f"request body over {limit} bytes")
        return message

    return receive_limited


def install_middleware(app: FastAPI) -> None:
    """Add the stack above; call before `@serve.ingress(app)` pickles the app."""
    app.add_middleware(AccessGuard)  # innermost of ours
    app.add_middleware(RequestLimits)
    app.add_middleware(OriginPolicy)
    app.add_middleware(RequestContext)  # outermost of ours
