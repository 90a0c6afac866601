"""The candle read path on a real database: relations, roll-ups, gap filling, limits, errors."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import polars as pl
import pytest

from engine.candles.service import CandleQuery, ChartService, build_query, parse_time
from engine.candles.store import refresh_aggregates, upsert_minute_bars
from engine.domain.bars import MinuteBar
from engine.domain.calendar import get_calendar
from engine.domain.intervals import parse_interval
from engine.errors import (
    InvalidIntervalError,
    InvalidRangeError,
    InvalidSymbolError,
    NoDataFoundError,
)
from engine.history.sample_data import synthetic_minute_bars
from engine.storage.migrate import migrate
from engine.storage.pool import create_pool

SYMBOL = "005930"
OTHER = "000660"
CAL = get_calendar()


def kst(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) - 9 * 3600


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


# A block of 1-minute rows deleted inside the 14 Feb 2024 session (with its aggregate buckets).
HOLE = (kst(2024, 2, 14, 10, 0), kst(2024, 2, 14, 10, 30))


@pytest.fixture(scope="module")
async def loaded(make_database) -> tuple[str, pl.DataFrame]:
    """5-16 Feb 2024 (Seollal holidays 9-12 Feb) for two symbols, with HOLE deleted."""
    url = make_database()
    await migrate(url)
    bars = synthetic_minute_bars([SYMBOL, OTHER], date(2024, 2, 5), date(2024, 2, 16), seed=3)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        await upsert_minute_bars(conn, bars)
        start, end = (datetime.fromtimestamp(t, UTC) for t in HOLE)
        await conn.execute(
            "DELETE FROM market_candles WHERE symbol = $1 AND ts >= $2 AND ts < $3",
            SYMBOL,
            start,
            end,
        )
        await refresh_aggregates(conn, start, end)
    finally:
        await conn.close()
    minutes = bars.with_columns(time=pl.col("ts").dt.epoch("s")).filter(
        ~((pl.col("symbol") == SYMBOL) & pl.col("time").is_between(HOLE[0], HOLE[1], "left"))
    )
    return url, minutes


@pytest.fixture(scope="module")
async def service(loaded) -> ChartService:
    url, _ = loaded
    pool = await create_pool(url, min_size=2, max_size=4)
    yield ChartService(pool, CAL, max_buckets=5_000, default_limit=100)
    await pool.close()


def query(interval: str, start: int | None, end: int | None, **kw) -> CandleQuery:
    return build_query(
        kw.pop("symbol", SYMBOL),
        interval,
        start,
        end,
        kw.pop("limit", None),
        kw.pop("fill", True),
        max_buckets=5_000,
    )


def expected_rollup(minutes: pl.DataFrame, interval: str, symbol: str = SYMBOL) -> pl.DataFrame:
    """Independent roll-up of the 1-minute rows (daily = KST date), for comparison."""
    iv = parse_interval(interval)
    rows = minutes.filter(pl.col("symbol") == symbol)
    key = pl.col("time") if iv.is_intraday else (pl.col("time") + 9 * 3600) // 86400 * 86400
    key = key - (key - iv.origin) % iv.seconds
    return (
        rows.sort("time")
        .group_by(key.alias("bucket"), maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .sort("bucket")
    )


@pytest.mark.parametrize("interval", ["1m", "3m", "5m", "15m", "30m", "1h", "4h"])
async def test_deleted_block_comes_back_continuous_and_flat(service, loaded, interval) -> None:
    _, minutes = loaded
    iv = parse_interval(interval)
    start, end = kst(2024, 2, 8, 0, 0), kst(2024, 2, 15, 0, 0)  # Thu .. Wed over Seollal
    series = await service.series(query(interval, start, end))
    out = series.frame
    grid = CAL.bucket_grid(iv, start, end)
    # Continuous: exactly the session grid, nothing over nights, the weekend or the holidays.
    assert out["time"].to_list() == grid.tolist()
    days = {datetime.fromtimestamp(t + 9 * 3600, UTC).date() for t in out["time"].to_list()}
    assert days == {date(2024, 2, 8), date(2024, 2, 13), date(2024, 2, 14)}
    # Filled exactly where a whole bucket fell in the hole; flat at the close before it.
    in_hole = (pl.col("time") >= HOLE[0]) & (pl.col("time") + iv.seconds <= HOLE[1])
    filled = out.filter(pl.col("is_filled"))
    assert filled["time"].to_list() == out.filter(in_hole)["time"].to_list()
    before = minutes.filter((pl.col("symbol") == SYMBOL) & (pl.col("time") < HOLE[0]))
    previous_close = float(before.sort("time")["close"][-1])
    if filled.height:
        for col in ("open", "high", "low", "close"):
            assert set(filled[col].to_list()) == {previous_close}
        assert set(filled["volume"].to_list()) == {0}
    # Every real candle equals an independent roll-up of the stored minutes.
    real = out.filter(~pl.col("is_filled"))
    want = expected_rollup(minutes, interval).join(
        real.select(pl.col("time").alias("bucket")), on="bucket", how="semi"
    )
    assert real.select("open", "high", "low", "close", "volume").rows() == [
        tuple(float(v) if i < 4 else v for i, v in enumerate(r))
        for r in want.select("open", "high", "low", "close", "volume").rows()
    ]


@pytest.mark.parametrize("interval", ["1d", "1w"])
async def test_daily_and_weekly_bars(service, loaded, interval) -> None:
    _, minutes = loaded
    series = await service.series(query(interval, utc(2024, 2, 1), utc(2024, 2, 17)))
    want = expected_rollup(minutes, interval)
    assert series.frame["time"].to_list() == want["bucket"].to_list()
    assert series.frame["close"].to_list() == [float(c) for c in want["close"]]
    assert not series.frame["is_filled"].any()
    if interval == "1d":  # trading dates only, stamped 00:00 UTC
        assert [datetime.fromtimestamp(t, UTC).day for t in series.frame["time"]] == [
            5,
            6,
            7,
            8,
            13,
            14,
            15,
            16,
        ]
    # After the data ends, trading days are still flat-filled (Monday 19 Feb), weekends not.
    later = await service.series(query(interval, utc(2024, 2, 1), utc(2024, 2, 20)))
    assert later.frame["time"][-1] == utc(2024, 2, 19)
    assert later.frame["is_filled"].to_list()[-1] is True


async def test_fill_false_returns_only_stored_rows(service, loaded) -> None:
    series = await service.series(query("5m", HOLE[0] - 600, HOLE[1] + 600, fill=False))
    times = series.frame["time"].to_list()
    assert times == [HOLE[0] - 600, HOLE[0] - 300, HOLE[1], HOLE[1] + 300]
    assert not series.frame["is_filled"].any()


async def test_range_starting_in_the_hole_is_seeded_by_the_last_close(service, loaded) -> None:
    _, minutes = loaded
    series = await service.series(query("1m", HOLE[0] + 600, HOLE[1] + 60))
    before = minutes.filter((pl.col("symbol") == SYMBOL) & (pl.col("time") < HOLE[0]))
    seed = float(before.sort("time")["close"][-1])
    assert series.frame.height == 21
    assert series.frame["is_filled"].to_list() == [True] * 20 + [False]
    assert series.frame["close"].to_list()[:20] == [seed] * 20
    assert series.next_time == HOLE[0] - 60


async def test_nothing_before_the_first_candle(service) -> None:
    series = await service.series(query("1m", utc(2024, 1, 29), kst(2024, 2, 5, 9, 3)))
    assert series.frame["time"].to_list() == [kst(2024, 2, 5, 9, m) for m in range(3)]
    assert series.next_time is None


async def test_symbols_are_kept_apart(service) -> None:
    series = await service.series(query("1m", HOLE[0], HOLE[1], symbol=OTHER))
    assert not series.frame["is_filled"].any()
    assert series.frame.height == 30


async def test_limit_counts_back_from_the_newest_candle(service, loaded) -> None:
    series = await service.series(query("5m", None, None, limit=10))
    last_close_print = kst(2024, 2, 16, 15, 30)
    assert series.frame["time"][-1] == last_close_print
    assert series.frame.height == 10
    # Default page size when neither from nor limit is given.
    default = await service.series(query("1m", None, None))
    assert default.frame.height == 100
    assert default.frame["time"][-1] == last_close_print


async def test_default_page_is_exactly_the_default_limit(service) -> None:
    """Bars outside the session grid (the forming bar after the 15:30 print) used to make the
    default page longer than the limit; the page is exactly `default_limit` candles, newest
    last."""
    bar = MinuteBar(SYMBOL, at(kst(2024, 2, 16, 15, 41)), 100.0, 110.0, 90.0, 105.0, 7)
    for interval in ("1m", "5m", "15m"):  # the data holds over 100 of each
        series = await service.series(query(interval, None, None), bar)
        assert series.frame.height == 100, interval
        assert series.frame["live"][-1], interval
        times = series.frame["time"].to_list()
        assert times == sorted(set(times)), interval
    plain = await service.series(query("1m", None, None, limit=7), bar)
    assert plain.frame.height == 7


async def test_limit_with_a_range_keeps_the_newest(service) -> None:
    series = await service.series(query("15m", kst(2024, 2, 13, 9), kst(2024, 2, 14, 9), limit=5))
    assert series.frame["time"].to_list() == [
        kst(2024, 2, 13, 14, 30),
        kst(2024, 2, 13, 14, 45),
        kst(2024, 2, 13, 15, 0),
        kst(2024, 2, 13, 15, 15),
        kst(2024, 2, 13, 15, 30),
    ]


async def test_no_data(service) -> None:
    with pytest.raises(NoDataFoundError):
        await service.series(query("1m", None, None, symbol="123456"))
    holiday = await service.series(query("5m", kst(2024, 2, 10, 0), kst(2024, 2, 12, 0)))
    assert holiday.frame.height == 0
    with pytest.raises(NoDataFoundError) as info:
        holiday.to_json_bytes()
    assert info.value.http_status == 404
    assert holiday.to_udf() == {"s": "no_data", "nextTime": kst(2024, 2, 8, 15, 30)}


async def test_too_many_buckets_is_invalid_range(service) -> None:
    with pytest.raises(InvalidRangeError):
        await service.series(query("1m", utc(2024, 1, 1), utc(2024, 3, 1)))


async def test_forming_bar_is_merged_live(service) -> None:
    minute = kst(2024, 2, 16, 15, 31)  # after the closing print: a new bucket
    bar = MinuteBar(SYMBOL, at(minute), 100.0, 110.0, 90.0, 105.0, 7)
    series = await service.series(query("1m", None, None, limit=3), bar)
    last = series.frame.row(-1, named=True)
    assert (last["time"], last["close"], last["live"], last["is_filled"]) == (
        minute,
        105.0,
        True,
        False,
    )
    hourly = await service.series(query("1h", kst(2024, 2, 16, 9), kst(2024, 2, 16, 16)), bar)
    stored = await service.series(query("1h", kst(2024, 2, 16, 9), kst(2024, 2, 16, 16)))
    live, before = hourly.frame.row(-1, named=True), stored.frame.row(-1, named=True)
    assert live["live"] and not before["live"]
    assert live["volume"] == before["volume"] + 7
    assert live["close"] == 105.0
    assert live["open"] == before["open"]
    assert hourly.frame.height == stored.frame.height


def test_request_validation() -> None:
    with pytest.raises(InvalidSymbolError):
        query("1m", None, None, symbol="5930;drop")
    with pytest.raises(InvalidIntervalError):
        query("7m", None, None)
    with pytest.raises(InvalidRangeError):
        query("1m", 2_000_000_000, 1_900_000_000)
    with pytest.raises(InvalidRangeError):
        query("1m", "yesterday", None)
    with pytest.raises(InvalidRangeError):
        query("1m", None, None, limit=0)
    assert parse_time("2024-02-14T10:00:00", "from") == kst(2024, 2, 14, 10, 0)
    assert parse_time("2024-02-14T01:00:00Z", "from") == kst(2024, 2, 14, 10, 0)
    assert parse_time("2024-02-14", "from") == kst(2024, 2, 14, 0, 0)
    assert parse_time(str(kst(2024, 2, 14, 10)), "from") == kst(2024, 2, 14, 10)
