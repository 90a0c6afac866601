"""Access control for the API: the optional bearer token, and the one origin policy of REST and
`/ws` (same-origin, or listed in KISRAY_CORS_ORIGINS).

With KISRAY_API_TOKEN unset the API is open (the local default). With it set, every HTTP route
except the open ones below needs `Authorization: Bearer <token>`; the WebSocket accepts the same
header or `?token=` (browsers cannot set headers on a WebSocket), checked with `token_matches`.
Comparison is constant time. Settings are read in the replica on first use, not when the app is
pickled, so each deployment follows its own environment.
"""

from __future__ import annotations

import hmac
import json
import logging
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.config import Settings, get_settings

logger = logging.getLogger(__name__)

POLICY_VIOLATION = 1008  # WebSocket close code for a refused origin, as api.ws uses

# Health probes, the API description and the static demo page carry no market data.
OPEN_PATHS = frozenset(
    {
        "/health",
        "/health/live",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/demo",
    }
)
DOCS_ASSETS = "/static-offline-docs/"  # Swagger UI's and ReDoc's scripts (fastapi-offline)
DEMO_ASSETS = "/demo/"  # the demo page's chart library and its licence


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value ("" if none)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def token_matches(given: str, settings: Settings | None = None) -> bool:
    """True when no token is configured, or `given` equals it (constant-time comparison)."""
    settings = settings or get_settings()
    if settings.api_token is None:
        return True
    expected = settings.api_token.get_secret_value().encode()
    return hmac.compare_digest(given.encode(), expected)


def requires_token(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith((DOCS_ASSETS, DEMO_ASSETS))


def is_same_origin(origin: str, host: str | None) -> bool:
    """True when the Origin's host[:port] is the Host the request was sent to: the page came
    from this server (`/demo`, `/docs`). Schemes are not compared, since a TLS-terminating proxy
    in front makes them differ while the page is still ours (gorilla/websocket does the same)."""
    if not host:
        return False
    netloc = urlsplit(origin).netloc
    return bool(netloc) and netloc.lower() == host.strip().lower()


def origin_allowed(origin: str | None, host: str | None, settings: Settings) -> bool:
    """The one origin policy of REST and `/ws`: no Origin (not a browser, or a same-origin GET),
    the server's own origin, a listed origin, or `*` in KISRAY_CORS_ORIGINS."""
    if not origin or is_same_origin(origin, host):
        return True
    allowed = settings.cors_origins
    return "*" in allowed or origin in allowed


_refused_logged: set[str] = set()
MAX_LOGGED_ORIGINS = 1000  # a flood of made-up origins must not grow the set without bound


def log_refused_origin(origin: str) -> None:
    """One WARNING per refused origin and process, naming the setting that would allow it."""
    if origin in _refused_logged or len(_refused_logged) >= MAX_LOGGED_ORIGINS:
        return
    _refused_logged.add(origin)
    logger.warning(
        "refused browser origin %s: add it to KISRAY_CORS_ORIGINS (comma-separated) to allow it",
        origin,
    )


def cors_middleware(app: ASGIApp, settings: Settings) -> ASGIApp:
    """Starlette's CORS handling for the configured origins (none listed: no CORS headers)."""
    return CORSMiddleware(
        app,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "OPTIONS"],
        allow_headers=["Authorization", "X-Request-ID"],
        expose_headers=["X-Request-ID"],
        max_age=600,
    )


class OriginPolicy:
    """`origin_allowed` for every HTTP request and WebSocket, built from the replica's own
    Settings on the first request.

    HTTP: same-origin requests pass untouched; others go through CORSMiddleware, which adds
    CORS headers only for listed origins (a refused one is logged). WebSocket: a refused origin
    gets the `/ws` protocol's UNAUTHORIZED error and close 1008 before the route runs; an
    allowed one reaches the route without its Origin header, so no second, narrower check
    downstream re-judges what was decided here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._settings: Settings | None = None
        self._cors: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._settings is None:
            self._settings = get_settings()
            self._cors = cors_middleware(self.app, self._settings)
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        allowed = origin_allowed(origin, headers.get("host"), self._settings)
        if not allowed:
            log_refused_origin(origin or "")
        if scope["type"] == "websocket":
            if not allowed:
                await _refuse_socket(origin or "", receive, send)
                return
            await self.app(scope, receive, send)
        elif origin and is_same_origin(origin, headers.get("host")):
            await self.app(scope, receive, send)
        else:
            assert self._cors is not None
            await self._cors(scope, receive, send)


async def _refuse_socket(origin: str, receive: Receive, send: Send) -> None:
    # The same frames as a token refusal in api.ws: accept, one error message, close 1008.
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    error = {"type": "error", "code": "UNAUTHORIZED", "message": f"origin {origin} is not allowed"}
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(error)})
    await send({"type": "websocket.close", "code": POLICY_VIOLATION})
