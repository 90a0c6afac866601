"""CandleActor: serves candle series (aggregates + gap fill + the live forming bar).

A thin shell over `engine.candles.service.ChartService`: it owns the asyncpg pool, the trading
calendar's per-year cache and the latest forming 1-minute bar of each symbol (pushed by the recorder
through `update_forming_bar`). One named, detached instance per cluster; the API finds it by name.
"""

from __future__ import annotations

import asyncio
import logging
import time

import ray

from actors.names import CANDLES, NAMESPACE
from engine.candles.clock import MarketClock
from engine.candles.service import CandleQuery, ChartService
from engine.config import get_settings
from engine.domain.bars import LiveBar, MinuteBar
from engine.domain.calendar import get_calendar
from engine.domain.intervals import parse_interval
from engine.domain.symbols import parse_symbol
from engine.errors import DatabaseUnavailableError
from engine.logs import configure_from_settings
from engine.storage.pool import create_pool

logger = logging.getLogger(__name__)

POOL_SIZE = 8


@ray.remote(num_cpus=0, max_restarts=-1)
class CandleActor:
    def __init__(self, database_url: str | None = None) -> None:
        settings = get_settings()
        configure_from_settings(settings, console=False)
        database_url = database_url or settings.database_dsn
        self._database_url = database_url
        self._calendar = get_calendar(
            settings.session_open, settings.session_close, settings.closing_call_minutes
        )
        self._max_buckets = settings.candles_max_buckets
        self._default_limit = settings.candles_default_limit
        self._service: ChartService | None = None
        self._opening = asyncio.Lock()
        self._forming: dict[str, MinuteBar] = {}
        # With the simulator upstream, "now" (where gap fill stops) is the simulator's.
        self._clock = MarketClock.from_settings(settings.market_clock, settings.sim_port)

    async def _chart(self) -> ChartService:
        if self._service is None:
            async with self._opening:
                if self._service is None:
                    if self._database_url is None:
                        raise DatabaseUnavailableError("KISRAY_DATABASE_URL is not set")
                    pool = await create_pool(self._database_url, min_size=2, max_size=POOL_SIZE)
                    self._service = ChartService(
                        pool,
                        self._calendar,
                        max_buckets=self._max_buckets,
                        default_limit=self._default_limit,
                    )
        return self._service

    async def ready(self) -> bool:
        """Open the pool and build this year's sessions, so the first request pays neither."""
        await self._chart()
        now = int(time.time())
        self._calendar.sessions(now - 86_400, now + 86_400)
        return True

    async def candles_json(self, query: CandleQuery) -> bytes:
        """The `/candles` body, serialized. Raises NoDataFoundError when the range is empty."""
        chart = await self._chart()
        now = await self._clock.now()
        series = await chart.series(query, self._forming.get(query.symbol), now=now)
        return series.to_json_bytes()

    async def udf_history(self, query: CandleQuery) -> dict:
        chart = await self._chart()
        now = await self._clock.now()
        series = await chart.series(query, self._forming.get(query.symbol), now=now)
        return series.to_udf()

    async def symbols(self) -> list[dict]:
        chart = await self._chart()
        return await chart.symbols()

    async def live_bars(
        self, symbol: str, intervals: list[str], bar: MinuteBar | None = None
    ) -> dict[str, LiveBar]:
        """The live bar of each interval for `symbol`, rolled up from `bar` (the forming
        1-minute bar the caller shows; the one held here when None) exactly as `/candles` rolls
        it. Empty when there is no forming bar."""
        forming = bar or self._forming.get(parse_symbol(symbol))
        if forming is None:
            return {}
        chart = await self._chart()
        out = {}
        for name in intervals:
            interval = parse_interval(name)
            out[interval.name] = await chart.live_bar(forming.symbol, interval, forming)
        return out

    def update_forming_bar(self, symbol: str, bar: MinuteBar | None) -> None:
        """Replace the symbol's forming 1-minute bar (None clears it once the bar is written).
        An older minute than the one held is ignored (calls may arrive out of order)."""
        if bar is None:
            self._forming.pop(parse_symbol(symbol), None)
            return
        held = self._forming.get(bar.symbol)
        if held is None or bar.time >= held.time:
            self._forming[bar.symbol] = bar

    def forming_bar(self, symbol: str) -> MinuteBar | None:
        return self._forming.get(symbol)


def candle_actor(database_url: str | None = None):
    """The cluster's CandleActor, created on first use (actors.names.CANDLES)."""
    return CandleActor.options(  # type: ignore[attr-defined]  # mypy ignores class decorators
        name=CANDLES,
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
    ).remote(database_url)
