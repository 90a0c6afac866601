"""Access control for the API: the optional bearer token, and the CORS allowlist.

With KISRAY_API_TOKEN unset the API is open (the local default). With it set, every HTTP route
except the open ones below needs `Authorization: Bearer <token>`; the WebSocket accepts the same
header or `?token=` (browsers cannot set headers on a WebSocket), checked with `token_matches`.
Comparison is constant time. Settings are read in the replica on first use, not when the app is
pickled, so each deployment follows its own environment.
"""

from __future__ import annotations

import hmac

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.config import Settings, get_settings

# Liveness probes, the API description and the static demo page carry no market data.
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/demo"})


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
    return path not in OPEN_PATHS


def cors_middleware(app: ASGIApp, settings: Settings) -> ASGIApp:
    """Starlette's CORS handling for the configured origins; no origins, no CORS headers."""
    if not settings.cors_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "OPTIONS"],
        allow_headers=["Authorization", "X-Request-ID"],
        expose_headers=["X-Request-ID"],
        max_age=600,
    )


class LazyCors:
    """CORSMiddleware built from the replica's own Settings on the first request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._wrapped: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._wrapped is None:
            self._wrapped = cors_middleware(self.app, get_settings())
        await self._wrapped(scope, receive, send)
