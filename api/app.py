"""The FastAPI application and its Ray Serve ingress deployment.

`@serve.ingress` pickles the FastAPI app when the decorator runs, so everything the routes use is
defined above it.
"""

from __future__ import annotations

import logging
import time

import ray
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray import serve

from actors.candles import NAMESPACE, candle_actor
from api import metrics
from api.candles_routes import candle_query, udf_config, udf_query, udf_symbol_info
from api.errors import install_error_handlers
from api.health import snapshot
from api.ingress import set_ws_compression
from api.middleware import install_middleware
from api.ws import install_ws_routes
from engine.chart import parse_symbol
from engine.config import get_settings
from engine.db.pool import create_pool
from engine.errors import DatabaseUnavailableError, NoDataFoundError
from engine.logs import configure_from_settings

logger = logging.getLogger(__name__)

app = FastAPI(
    title="kisray",
    description="Realtime market data for Korean stock charts: candles and live trades.",
    version="0.1.0",
)

install_error_handlers(app)
install_middleware(app)  # request id, metrics, CORS, token and body limit
install_ws_routes(app)  # WS /ws and GET /demo

# Every open WebSocket holds one ongoing request; the default of 5 would hang the sixth tab.
MAX_ONGOING_REQUESTS = 1000


@serve.deployment(
    name="KisrayIngress",
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": 0},
)
@serve.ingress(app)
class KisrayIngress:
    def __init__(self, candle_actor_name: str | None = None) -> None:
        self.settings = get_settings()
        configure_from_settings(self.settings, console=False)
        self._pool = None
        self._candle_actor = None
        self._candle_actor_name = candle_actor_name  # None: the cluster's "candles" actor
        # Before Serve starts this replica's HTTP server, which happens after the constructor.
        set_ws_compression(self.settings.ws_compression)
        self._prewarm_sessions()
        self._prewarm_candles()

    @staticmethod
    def _prewarm_sessions() -> None:
        # Create the session pool now, not on the first tab: starting its actors takes seconds.
        from api.ws import replica_session_pool

        try:
            replica_session_pool()
        except Exception:  # a replica must start even if Ray refuses the pool for now
            logger.exception("could not pre-warm the WebSocket session pool")

    def _prewarm_candles(self) -> None:
        # Start the candle actor and let it open its pool and build the calendar now: done on
        # the first /candles instead, that request took 11-13 s on a 2-core machine.
        try:
            self._candles().ready.remote()
        except Exception:  # a replica must start even if the actor cannot be created yet
            logger.exception("could not pre-warm the candle actor")

    def _candles(self):
        if self._candle_actor is None:
            if self._candle_actor_name is None:
                self._candle_actor = candle_actor()
            else:
                self._candle_actor = ray.get_actor(self._candle_actor_name, namespace=NAMESPACE)
        return self._candle_actor

    async def _get_pool(self):
        # Only a pool that opened is kept: after a failed start the next request tries again,
        # and an open asyncpg pool reconnects on acquire once the database is back.
        if self._pool is None:
            if self.settings.database_url is None:
                raise DatabaseUnavailableError("KISRAY_DATABASE_URL is not set for this replica")
            self._pool = await create_pool(
                self.settings.database_url.get_secret_value(), min_size=1, max_size=10
            )
        return self._pool

    @app.get("/health", tags=["operations"])
    async def health(self) -> JSONResponse:
        """Database, KIS socket, aggregates, recorder; 503 "degraded" when an essential part is
        down (docs/operations.md). Open even when KISRAY_API_TOKEN is set."""
        body = await snapshot(self.settings, self._get_pool)
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def get_metrics(self) -> Response:
        """Prometheus text format (docs/operations.md lists the series)."""
        metrics.sample(await snapshot(self.settings, self._get_pool))
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/candles/{symbol}", response_class=Response, tags=["candles"])
    async def candles(
        self,
        symbol: str,
        interval: str = "1m",
        from_: str | None = Query(None, alias="from", description="epoch s or ISO-8601 (KST)"),
        to: str | None = Query(None, description="exclusive; default: the newest candle"),
        limit: int | None = Query(None, description="newest N candles of the range"),
        countback: int | None = Query(None, description="N candles ending at `to`"),
        fill: bool = True,
    ) -> Response:
        """Candles of any interval, gap-filled inside KRX sessions (see docs/candles-api.md)."""
        query = candle_query(self.settings, symbol, interval, from_, to, limit, countback, fill)
        body = await self._candles().candles_json.remote(query)
        return Response(body, media_type="application/json")

    @app.get("/symbols", tags=["candles"])
    async def symbols(self) -> dict:
        """Symbols with data and their first/last candle time (epoch seconds)."""
        return {"symbols": await self._candles().symbols.remote()}

    @app.get("/udf/config", tags=["udf"])
    async def get_udf_config(self) -> dict:
        return udf_config()

    @app.get("/udf/time", tags=["udf"])
    async def get_udf_time(self) -> PlainTextResponse:
        return PlainTextResponse(str(int(time.time())))

    @app.get("/udf/symbols", tags=["udf"])
    async def get_udf_symbol(self, symbol: str) -> dict:
        code = parse_symbol(symbol.rsplit(":", 1)[-1])  # accepts "KRX:005930"
        known = {s["symbol"]: s for s in await self._candles().symbols.remote()}
        if code not in known:
            raise NoDataFoundError(f"unknown symbol {code}")
        return udf_symbol_info(self.settings, code, known[code]["name"])

    @app.get("/udf/history", tags=["udf"])
    async def get_udf_history(
        self,
        symbol: str,
        resolution: str,
        from_: int | None = Query(None, alias="from"),
        to: int | None = None,
        countback: int | None = None,
    ) -> dict:
        """Columnar bars; `s: no_data` with `nextTime` when the range is empty."""
        code = symbol.rsplit(":", 1)[-1]
        query = udf_query(self.settings, code, resolution, from_, to, countback)
        return await self._candles().udf_history.remote(query)


def build_app(args: dict[str, str] | None = None):
    """The Serve application `kisray up` and `serve run api.app:build_app` deploy.

    Serve calls an application builder with one argument (the config's `args`); none are used.
    """
    return KisrayIngress.bind()


# What `serve build` and deploy/serve_config.yaml import: Serve's config wants an Application.
application = build_app()
