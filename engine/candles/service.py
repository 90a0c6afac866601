"""Chart series: validate a candle request, read it, roll it up, fill it, merge the forming bar.

The pure pipeline behind `/candles` and `/udf/history`; the CandleActor owns one `ChartService`.
Times are epoch seconds (UTC) throughout; a bucket's time is its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import polars as pl

from engine.candles import series as db_series
from engine.candles.gapfill import fill_gaps, mark_unfilled
from engine.candles.rollup import roll_up
from engine.domain.bars import LiveBar, MinuteBar
from engine.domain.calendar import TradingCalendar, daily_stamp
from engine.domain.intervals import Interval, parse_interval
from engine.domain.kst import KST_OFFSET_S
from engine.domain.symbols import parse_symbol
from engine.errors import (
    DatabaseUnavailableError,
    InvalidRangeError,
    NoDataFoundError,
)

logger = logging.getLogger(__name__)

_EPOCH_RE = re.compile(r"^-?\d+(\.\d+)?$")
# Before this the calendar has no sessions; after it nobody needs candles.
MIN_TIME = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
MAX_TIME = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
# A span this many times the bucket cap is refused before the grid is even built.
_CRUDE_SPAN_FACTOR = 20


@dataclass(frozen=True, slots=True)
class CandleQuery:
    """A validated candle request. `start`/`end` are None when the client left them out."""

    symbol: str
    interval: Interval
    start: int | None
    end: int | None
    limit: int | None
    fill: bool = True


@dataclass(frozen=True, slots=True)
class CandleSeries:
    """A finished series. `next_time` is the newest bar time before the range (UDF's nextTime)."""

    symbol: str
    interval: Interval
    frame: pl.DataFrame = field(repr=False)
    next_time: int | None = None

    def require_data(self) -> None:
        if self.frame.height == 0:
            raise NoDataFoundError(f"no candles for {self.symbol} ({self.interval.name}) in range")

    def to_json_bytes(self) -> bytes:
        """The `/candles` response body (docs/candles-api.md), serialized by polars."""
        self.require_data()
        head = json.dumps({"symbol": self.symbol, "interval": self.interval.name})[:-1]
        rows = _presentable(self.frame).write_json()
        return f'{head}, "candles": {rows}}}'.encode()

    def to_udf(self) -> dict[str, Any]:
        """The UDF `/history` body: columnar, or `no_data` with nextTime."""
        if self.frame.height == 0:
            body: dict[str, Any] = {"s": "no_data"}
            if self.next_time is not None:
                body["nextTime"] = self.next_time
            return body
        frame = _presentable(self.frame)
        return {
            "s": "ok",
            "t": frame["time"].to_list(),
            "o": frame["open"].to_list(),
            "h": frame["high"].to_list(),
            "l": frame["low"].to_list(),
            "c": frame["close"].to_list(),
            "v": frame["volume"].to_list(),
        }


def _presentable(frame: pl.DataFrame) -> pl.DataFrame:
    """KRW prices are whole numbers: send them as integers when every price is one."""
    prices = ("open", "high", "low", "close")
    if all(np.all(np.mod(frame[c].to_numpy(), 1) == 0) for c in prices):
        # Series casts, not with_columns: an eager frame method still runs a lazy plan.
        frame = pl.DataFrame(
            [frame[c].cast(pl.Int64) if c in prices else frame[c] for c in frame.columns]
        )
    return frame


# -- request parsing (cheap, no I/O: the routes call these before touching an actor) ----------
def parse_time(text: str | int | float | None, name: str) -> int | None:
    """Epoch seconds or ISO-8601 (naive = KST; a bare date = its KST midnight) → epoch seconds."""
    if text is None or text == "":
        return None
    raw = str(text).strip()
    try:
        if _EPOCH_RE.match(raw):
            value = int(float(raw))
        else:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                value = int(parsed.replace(tzinfo=UTC).timestamp()) - KST_OFFSET_S
            else:
                value = int(parsed.timestamp())
    except (ValueError, OverflowError):
        raise InvalidRangeError(f"{name}: {raw!r} is neither epoch seconds nor ISO-8601") from None
    if not MIN_TIME <= value <= MAX_TIME:
        raise InvalidRangeError(f"{name}: {raw!r} is outside 2000-2100")
    return value


def build_query(
    symbol: str,
    interval: str,
    start: str | int | None,
    end: str | int | None,
    limit: int | None,
    fill: bool,
    *,
    max_buckets: int,
) -> CandleQuery:
    """Validate raw request parameters. Raises INVALID_SYMBOL / INVALID_INTERVAL / INVALID_RANGE."""
    parsed_symbol = parse_symbol(symbol)
    parsed_interval = parse_interval(interval)
    first, last = parse_time(start, "from"), parse_time(end, "to")
    if first is not None and last is not None and first >= last:
        raise InvalidRangeError("from must be before to")
    if limit is not None and not 1 <= limit <= max_buckets:
        raise InvalidRangeError(f"limit/countback must be between 1 and {max_buckets}")
    if first is not None and last is not None:
        span = (last - first) // parsed_interval.seconds
        if span > max_buckets * _CRUDE_SPAN_FACTOR:
            raise InvalidRangeError(_too_many(max_buckets))
    return CandleQuery(parsed_symbol, parsed_interval, first, last, limit, fill)


def _too_many(max_buckets: int) -> str:
    return f"range spans more than {max_buckets} candles; narrow it or use a coarser interval"


def bucket_of_minute(interval: Interval, minute: int) -> int:
    """The interval bucket a 1-minute candle starting at `minute` belongs to."""
    if interval.is_intraday:
        return interval.floor(minute)
    return interval.floor(daily_stamp(minute))


def minute_bound(interval: Interval, bucket: int) -> int:
    """The first 1-minute start belonging to the bucket starting at `bucket`."""
    return bucket if interval.is_intraday else bucket - KST_OFFSET_S


# -- the pipeline ------------------------------------------------------------------------------
class ChartService:
    """Series for the candle API, over an asyncpg pool and the trading calendar."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        calendar: TradingCalendar,
        *,
        max_buckets: int = 20_000,
        default_limit: int = 500,
        db_timeout_s: float = 5.0,
    ) -> None:
        self.pool = pool
        self.calendar = calendar
        self.max_buckets = max_buckets
        self.default_limit = default_limit
        self.db_timeout_s = db_timeout_s

    @contextlib.asynccontextmanager
    async def _database(self) -> AsyncIterator[None]:
        """Bound every read: an exhausted pool or a hung server becomes DB_CONNECTION_ERROR
        (503) instead of a request that waits forever for a connection."""
        try:
            async with asyncio.timeout(self.db_timeout_s):
                yield
        except TimeoutError:
            raise DatabaseUnavailableError(
                f"the database did not answer within {self.db_timeout_s:g} s "
                "(pool exhausted or server overloaded)"
            ) from None

    async def series(
        self, query: CandleQuery, forming: MinuteBar | None = None, *, now: int | None = None
    ) -> CandleSeries:
        interval = query.interval
        now = int(time.time()) if now is None else now
        end = query.end
        if end is None:
            end = await self._default_end(query, forming)
            if end is None:
                raise NoDataFoundError(f"no candles for {query.symbol}")
        start = query.start
        newest = query.limit
        if start is None:
            # Counted on the session grid, the newest N buckets are not always N candles:
            # stored or forming bars outside the grid (after-hours, the bar after 15:30) add
            # rows, buckets after `now` are never filled. Read up to twice as far back, within
            # max_buckets, and keep exactly the newest N.
            newest = query.limit or self.default_limit
            reach = newest + min(newest, max(0, self.max_buckets - newest))
            start = self.calendar.buckets_before(interval, interval.ceil(end), reach)
        first_bucket, end_bucket = interval.ceil(start), interval.ceil(end)
        grid = self.calendar.bucket_grid(interval, first_bucket, end_bucket)
        if grid.size > self.max_buckets:
            raise InvalidRangeError(_too_many(self.max_buckets))

        frame, prior = await self._read(query, interval, first_bucket, end_bucket)
        if interval.is_derived:
            frame = roll_up(frame, interval)
        frame = frame.hstack([pl.Series("live", np.zeros(frame.height, dtype=bool))])
        if forming is not None:
            live = await self.live_bar(query.symbol, interval, forming)
            frame = _merge_live(frame, live, first_bucket, end_bucket)
        if query.fill:
            # Never invent candles in the future: the grid stops at the bucket holding `now`.
            grid = grid[grid <= now]
            seed = prior.close if prior is not None else None
            frame = fill_gaps(frame, grid, seed_close=seed)
        else:
            frame = mark_unfilled(frame)
        if newest is not None and frame.height > newest:
            frame = frame.tail(newest)
        next_time = bucket_of_minute(interval, prior.time) if prior is not None else None
        return CandleSeries(query.symbol, interval, frame, next_time)

    async def _read(
        self, query: CandleQuery, interval: Interval, first_bucket: int, end_bucket: int
    ) -> tuple[pl.DataFrame, db_series.PriorClose | None]:
        async with self._database():
            return await db_series.fetch_candles(
                self.pool,
                interval.relation,
                query.symbol,
                first_bucket,
                end_bucket,
                seed_before=minute_bound(interval, first_bucket),
            )

    async def _default_end(self, query: CandleQuery, forming: MinuteBar | None) -> int | None:
        """End of the bucket holding the newest candle (stored or forming)."""
        async with self._database():
            latest = await db_series.latest_minute(self.pool, query.symbol)
        if forming is not None:
            latest = forming.time if latest is None else max(latest, forming.time)
        if latest is None:
            return None
        return bucket_of_minute(query.interval, latest) + query.interval.seconds

    async def live_bar(self, symbol: str, interval: Interval, forming: MinuteBar) -> LiveBar:
        """The bucket of `interval` holding the forming minute, as it stands: its stored minutes
        before the forming one rolled together with the forming bar (the forming bar alone at 1m).

        The one definition of the live bar, shared by `/candles` and the `candle:SYM:INTERVAL`
        channels so both show the same numbers. Minutes at or after the forming one are left
        out: the recorder may already have written the forming minute (it closes an idle
        symbol's bar), and counting it twice would inflate the bucket's volume.
        """
        bucket = bucket_of_minute(interval, forming.time)
        first_minute = minute_bound(interval, bucket)
        stored = None
        if first_minute < forming.time:
            async with self._database():
                stored = await db_series.minutes_bar(self.pool, symbol, first_minute, forming.time)
        return LiveBar.of(bucket, forming, stored)

    async def symbols(self) -> list[dict[str, Any]]:
        async with self._database():
            extents = await db_series.symbol_extents(self.pool)
        return [
            {"symbol": e.symbol, "name": e.name, "first": e.first, "last": e.last} for e in extents
        ]


def _merge_live(
    frame: pl.DataFrame, live: LiveBar, first_bucket: int, end_bucket: int
) -> pl.DataFrame:
    """Put the live bucket in place of its stored row (if any), marked live."""
    if not first_bucket <= live.time < end_bucket:
        return frame
    row = (live.time, live.open, live.high, live.low, live.close, live.volume, True)
    live_row = pl.DataFrame([row], schema=frame.schema, orient="row")
    return pl.concat([frame.filter(pl.col("time") != live.time), live_row]).sort("time")
