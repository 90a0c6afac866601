"""The FastAPI application and its Ray Serve ingress deployment.

`@serve.ingress` pickles the FastAPI app when the decorator runs, so everything the routes use is
defined above it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve

from engine.config import get_settings
from engine.db.health import DatabaseHealth, check_database
from engine.db.pool import create_pool
from engine.errors import DatabaseUnavailableError
from engine.logs import configure_from_settings

logger = logging.getLogger(__name__)

app = FastAPI(
    title="kisray",
    description="Realtime market data for Korean stock charts: candles and live trades.",
    version="0.1.0",
)

# Every open WebSocket holds one ongoing request; the default of 5 would hang the sixth tab.
MAX_ONGOING_REQUESTS = 1000


@serve.deployment(
    name="KisrayIngress",
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": 0},
)
@serve.ingress(app)
class KisrayIngress:
    def __init__(self) -> None:
        self.settings = get_settings()
        configure_from_settings(self.settings, console=False)
        self._pool = None

    async def _get_pool(self):
        if self._pool is None:
            if self.settings.database_url is None:
                raise DatabaseUnavailableError("KISRAY_DATABASE_URL is not set for this replica")
            self._pool = await create_pool(
                self.settings.database_url.get_secret_value(), min_size=1, max_size=10
            )
        return self._pool

    @app.get("/health")
    async def health(self) -> JSONResponse:
        settings = self.settings
        try:
            database = await check_database(await self._get_pool())
        except DatabaseUnavailableError:
            database = DatabaseHealth(False, None, None, None, error="unreachable")
        kis = {
            "state": "not_started",
            "env": settings.kis_env,
            "ws_url": settings.ws_url,
            "rest_url": settings.rest_url,
            "registrations": 0,
        }
        status = "ok" if database.reachable else "degraded"
        body = {"status": status, "database": database.as_dict(), "kis": kis, "aggregates": {}}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)


def build_app(args: dict[str, str] | None = None):
    """The Serve application `kisray up` and `serve run api.app:build_app` deploy.

    Serve calls an application builder with one argument (the config's `args`); none are used.
    """
    return KisrayIngress.bind()


# What `serve build` and deploy/serve_config.yaml import: Serve's config wants an Application.
application = build_app()
