"""The FastAPI application and its Ray Serve ingress deployment.

`@serve.ingress` pickles the FastAPI app when the decorator runs, so everything the routes use is
defined above it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from ray import serve

from actors.candles import candle_actor
from actors.names import find
from api import metrics
from api.candles_routes import candle_query, udf_config, udf_query, udf_search, udf_symbol_info
from api.errors import install_error_handlers
from api.health import snapshot
from api.ingress import (
    HTTP_SERVER_DEFAULTS,
    bind_with_reuse_addr,
    set_server_defaults,
    set_ws_compression,
)
from api.middleware import install_middleware
from api.replica_grpc import bind_replica_grpc_to_node_ip
from api.schemas import (
    HEALTH_EXAMPLE,
    METRICS_EXAMPLE,
    CandleSeries,
    SymbolList,
    UdfConfig,
    UdfHistory,
    UdfSearchResult,
    UdfSymbolInfo,
    install_plain_parameters,
)
from api.ws import install_ws_routes
from engine.candles.clock import MarketClock
from engine.config import get_settings
from engine.domain.symbols import parse_symbol
from engine.errors import DatabaseUnavailableError, NoDataFoundError
from engine.logs import configure_from_settings
from engine.storage.pool import create_pool

logger = logging.getLogger(__name__)

# Swagger UI and ReDoc from the fastapi-offline wheel, served at /static-offline-docs: /docs
# works without a network (FastAPI's default pages load their scripts from a CDN).
app = FastAPIOffline(
    title="kisray",
    description="Realtime market data for Korean stock charts: candles and live trades.",
    version="0.1.0",
)

install_error_handlers(app)
install_plain_parameters(app)  # after the error envelope: wraps its openapi()
install_middleware(app)  # request id, metrics, CORS, token and body limit
install_ws_routes(app)  # WS /ws and GET /demo

# Every open WebSocket holds one ongoing request; the default of 5 would hang the sixth tab, and
# at the old 1,000 the 1,001st tab (or a health check) waited for one to close (bench_scale's
# connect storm: 1 % of 1,000 tabs never got a trade). The hub's adaptive window and the
# per-socket outbox bound are the overload controls, not this cap.
MAX_ONGOING_REQUESTS = 20_000
# Serve notices a dead replica only when its next health check fails: at the default 10 s (±10 %)
# a killed replica stayed down up to ~15 s with its replacement's ~4 s start (7-9 s measured).
# The check is one cheap actor call.
HEALTH_CHECK_PERIOD_S = 2.0


@serve.deployment(
    name="KisrayIngress",
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
    ray_actor_options={"num_cpus": 0},
)
@serve.ingress(app)
class KisrayIngress:
    def __init__(self, candle_actor_name: str | None = None) -> None:
        self.settings = get_settings()
        configure_from_settings(self.settings, console=False)
        self._pool = None
        self._candle_actor: Any = None  # the CandleActor handle, found on first use
        self._candle_actor_name = candle_actor_name  # None: the cluster's "candles" actor
        self._market_clock = MarketClock.from_settings(
            self.settings.market_clock, self.settings.sim_port
        )
        # Before Serve starts this replica's HTTP and gRPC servers, which happens after the
        # constructor.
        set_server_defaults(**HTTP_SERVER_DEFAULTS)
        set_ws_compression(self.settings.ws_compression)
        bind_replica_grpc_to_node_ip()
        bind_with_reuse_addr()  # a restarted replica gets KISRAY_PORT back at once
        self._prewarm_sessions()
        self._prewarm_candles()

    @staticmethod
    def _prewarm_sessions() -> None:
        # Create the session pool now, not on the first tab: starting its actors takes seconds.
        from api.hub import replica_session_pool

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
                self._candle_actor = find(self._candle_actor_name)
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

    @app.get(
        "/health",
        tags=["operations"],
        responses={200: {"content": {"application/json": {"example": HEALTH_EXAMPLE}}}},
    )
    async def health(self) -> JSONResponse:
        """Readiness: 200 "ok" only when every part answers and a new tab would get data (the
        database; with live data, the KIS socket connected and acknowledged, the recorder, the
        session pool); else 503 "degraded" with `problems` (docs/operations.md). Open even when
        KISRAY_API_TOKEN is set."""
        body = await snapshot(self.settings, self._get_pool)
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get(
        "/health/live",
        tags=["operations"],
        responses={200: {"content": {"application/json": {"example": {"status": "alive"}}}}},
    )
    async def liveness(self) -> dict:
        """Liveness: 200 while this replica answers, whatever its parts say (restart it only
        when this fails; route traffic by `/health`)."""
        return {"status": "alive"}

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"example": METRICS_EXAMPLE}}}},
    )
    async def get_metrics(self) -> Response:
        """Prometheus text format (docs/operations.md lists the series)."""
        metrics.sample(await snapshot(self.settings, self._get_pool))
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get(
        "/candles/{symbol}",
        response_class=Response,
        tags=["candles"],
        responses={200: {"model": CandleSeries, "description": "Candles, ascending"}},
    )
    async def candles(
        self,
        symbol: str = Path(
            description="KRX code, 6-7 digits or capitals",
            openapi_examples={"Samsung Electronics": {"value": "005930"}},
        ),
        interval: str = Query(
            "1m",
            description="1m 3m 5m 15m 30m 1h 4h 1d 1w, or any whole number of minutes or hours "
            "dividing a day",
            openapi_examples={"5 minutes": {"value": "5m"}},
        ),
        from_: str | None = Query(
            None,
            alias="from",
            description="first bucket (inclusive): epoch seconds (1707868800) or ISO-8601 "
            "(2024-02-14T09:00, naive = KST); unset: the newest `limit` candles",
        ),
        to: str | None = Query(
            None, description="end (exclusive), as `from`; default: after the newest candle"
        ),
        limit: int | None = Query(None, description="the newest N candles of the range"),
        countback: int | None = Query(
            None, description="N candles ending at `to`; outranks `from` (TradingView)"
        ),
        fill: bool = Query(
            True, description="true: flat candles for session buckets without trades"
        ),
    ) -> Response:
        """Candles of any interval, gap-filled inside KRX sessions (see docs/candles-api.md)."""
        query = candle_query(self.settings, symbol, interval, from_, to, limit, countback, fill)
        body = await self._candles().candles_json.remote(query)
        return Response(body, media_type="application/json")

    @app.get("/symbols", tags=["candles"], responses={200: {"model": SymbolList}})
    async def symbols(self) -> dict:
        """Symbols with data and their first/last candle time (epoch seconds)."""
        return {"symbols": await self._candles().symbols.remote()}

    @app.get("/udf/config", tags=["udf"], responses={200: {"model": UdfConfig}})
    async def get_udf_config(self) -> dict:
        """The datafeed's capabilities (TradingView UDF `config`)."""
        return udf_config()

    @app.get(
        "/udf/time",
        tags=["udf"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"example": "1707868800"}}}},
    )
    async def get_udf_time(self) -> PlainTextResponse:
        """Server time, epoch seconds: the market's clock (the simulator's in the demo stack)."""
        return PlainTextResponse(str(await self._market_clock.now()))

    @app.get("/udf/symbols", tags=["udf"], responses={200: {"model": UdfSymbolInfo}})
    async def get_udf_symbol(
        self,
        symbol: str = Query(
            description="code, or EXCHANGE:code",
            openapi_examples={"Samsung Electronics": {"value": "KRX:005930"}},
        ),
    ) -> dict:
        """Symbol resolution (TradingView UDF `symbols`); 404 for a symbol without data."""
        code = parse_symbol(symbol.rsplit(":", 1)[-1])  # accepts "KRX:005930"
        known = {s["symbol"]: s for s in await self._candles().symbols.remote()}
        if code not in known:
            raise NoDataFoundError(f"unknown symbol {code}")
        entry = known[code]
        # The XKRX calendar's first build takes seconds: off the replica's event loop.
        return await asyncio.to_thread(
            udf_symbol_info, self.settings, code, entry["name"], entry["first"]
        )

    @app.get("/udf/search", tags=["udf"], responses={200: {"model": list[UdfSearchResult]}})
    async def get_udf_search(
        self,
        query: str = Query(
            "", description="part of a code or name", openapi_examples={"삼성": {"value": "삼성"}}
        ),
        type: str = Query("", description="symbol type; only `stock` exists"),
        exchange: str = Query("", description="exchange; only `KRX` exists"),
        limit: int = Query(30, ge=1, le=100, description="most results"),
    ) -> list[dict]:
        """Symbols with data matching the query (TradingView UDF `search`)."""
        known = await self._candles().symbols.remote()
        return udf_search(known, query, type, exchange, limit)

    @app.get("/udf/history", tags=["udf"], responses={200: {"model": UdfHistory}})
    async def get_udf_history(
        self,
        symbol: str = Query(
            description="code, or EXCHANGE:code", openapi_examples={"Samsung": {"value": "005930"}}
        ),
        resolution: str = Query(
            description="1 3 5 15 30 60 240 (minutes), 1D, 1W",
            openapi_examples={"5 minutes": {"value": "5"}},
        ),
        from_: int | None = Query(None, alias="from", description="epoch seconds, inclusive"),
        to: int | None = Query(None, description="epoch seconds, exclusive"),
        countback: int | None = Query(None, description="bars ending at `to`; outranks `from`"),
    ) -> dict:
        """Columnar bars; `s: no_data` with `nextTime` when the range is empty."""
        code = symbol.rsplit(":", 1)[-1]
        query = udf_query(self.settings, code, resolution, from_, to, countback)
        return await self._candles().udf_history.remote(query)


def build_app(args: dict[str, str] | None = None):
    """The Serve application `kisray up` and `serve run api.app:build_app` deploy.

    Serve calls an application builder with one argument (the config's `args`); none are used.
    KISRAY_REPLICAS sets the replicas (a Serve config's `num_replicas` overrides it).
    """
    replicas = get_settings().replicas
    # mypy ignores class decorators, hence the attr-defined ignores.
    if replicas == 1:  # as declared: `serve build` then writes the config it always did
        return KisrayIngress.bind()  # type: ignore[attr-defined]
    return KisrayIngress.options(num_replicas=replicas).bind()  # type: ignore[attr-defined]


# What `serve build` and deploy/serve_config.yaml import: Serve's config wants an Application.
application = build_app()
