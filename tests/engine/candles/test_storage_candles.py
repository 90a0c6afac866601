"""The 1-minute write path and the aggregates it keeps current, on a real database."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import asyncpg
import polars as pl
import pytest

from engine.candles.store import refresh_aggregates, upsert_minute_bars
from engine.domain.bars import MinuteBar
from engine.errors import InvalidCandlesError
from engine.history.sample_data import synthetic_minute_bars
from tests.engine.storage_support import (
    AGGREGATES,
    BACKENDS,
    as_tuples,
    expected_aggregate,
    fresh_database,
    relation_tuples,
)


@pytest.fixture(params=BACKENDS)
async def conn(request: pytest.FixtureRequest) -> asyncpg.Connection:
    url = await fresh_database(request.param, request)
    connection = await asyncpg.connect(url)
    await connection.execute("SET TIME ZONE 'UTC'")
    yield connection
    await connection.close()


def _as_strings(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("open", "high", "low", "close").cast(pl.String))


def _extended_hours(symbol: str, day: date, price: str) -> pl.DataFrame:
    """Pre-market (08:30–08:59 KST) and after-hours (15:40–17:59 KST) rows of one KST date."""
    kst_midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=9)
    minutes = [*range(8 * 60 + 30, 9 * 60), *range(15 * 60 + 40, 18 * 60)]
    return pl.DataFrame(
        {
            "symbol": symbol,
            "ts": [kst_midnight + timedelta(minutes=m) for m in minutes],
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": [m for m in minutes],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def _randomized_minutes(seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    frame = _as_strings(
        synthetic_minute_bars(("005930", "000660"), date(2025, 3, 10), date(2025, 3, 12), seed=seed)
    )
    # Exact decimals too (an ETF-like instrument priced to 4 decimal places).
    suffix = [f".{rng.randrange(10_000):04d}" for _ in range(2)]
    decimals = frame.filter(pl.col("symbol") == "000660").with_columns(
        pl.lit("069500").alias("symbol"),
        (pl.col("open") + suffix[0]).alias("open"),
        (pl.col("close") + suffix[1]).alias("close"),
    )
    as_float = {c: pl.col(c).cast(pl.Float64) for c in ("open", "close")}
    decimals = decimals.with_columns(
        pl.when(as_float["open"] >= as_float["close"])
        .then(pl.col("open"))
        .otherwise(pl.col("close"))
        .alias("high"),
        pl.when(as_float["open"] <= as_float["close"])
        .then(pl.col("open"))
        .otherwise(pl.col("close"))
        .alias("low"),
    )
    extra = _extended_hours("005930", date(2025, 3, 11), "70000")
    return pl.concat([frame, decimals, extra])


@pytest.mark.parametrize("seed", [1, 2])
async def test_aggregates_equal_an_independent_recomputation(conn, seed: int) -> None:
    rng = random.Random(seed)
    minutes = _randomized_minutes(seed)
    order = list(range(minutes.height))
    rng.shuffle(order)
    shuffled = minutes[order]
    # Late rows: held back, written after everything around them.
    late_count = minutes.height // 10
    on_time, late = shuffled[late_count:], shuffled[:late_count]
    cut = sorted(rng.sample(range(1, on_time.height), 4))
    for start, stop in zip([0, *cut], [*cut, on_time.height], strict=True):
        await upsert_minute_bars(conn, on_time[start:stop])
    await upsert_minute_bars(conn, late)
    # Corrections: some rows rewritten with new values, so buckets must be recomputed.
    corrected = minutes.sample(n=200, seed=seed).with_columns(
        (pl.col("high").cast(pl.Float64) * 2).cast(pl.Int64).cast(pl.String).alias("high"),
        (pl.col("volume") + 7).alias("volume"),
    )
    assert await upsert_minute_bars(conn, corrected) == 200
    final = pl.concat([minutes, corrected]).unique(["symbol", "ts"], keep="last")

    mode = await conn.fetchval("SELECT value FROM kisray_meta WHERE key = 'db_mode'")
    if mode == "timescaledb":
        # Materialize part of the history; the rest stays real-time.
        await refresh_aggregates(
            conn, datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 3, 11, tzinfo=UTC)
        )

    assert await relation_tuples(conn, "candles_1m") == as_tuples(final)
    for interval, (relation, _, _) in AGGREGATES.items():
        got = await relation_tuples(conn, relation)
        assert got == as_tuples(expected_aggregate(final, interval)), relation
    assert await conn.fetchval("SELECT count(*) FROM market_candles_15m") > 0


async def test_daily_bar_is_the_kst_date_labelled_midnight_utc(conn) -> None:
    day = date(2025, 3, 11)
    await upsert_minute_bars(conn, _extended_hours("005930", day, "70000"))
    rows = await conn.fetch("SELECT ts, volume FROM market_candles_1d WHERE symbol = '005930'")
    # 08:30 KST on the 11th is 23:30 UTC on the 10th, yet it is on the 11th's bar.
    assert [r["ts"] for r in rows] == [datetime(2025, 3, 11, tzinfo=UTC)]
    minutes = [*range(8 * 60 + 30, 9 * 60), *range(15 * 60 + 40, 18 * 60)]
    assert rows[0]["volume"] == sum(minutes)


async def test_rewriting_identical_rows_changes_nothing(conn) -> None:
    minutes = synthetic_minute_bars(("005930",), date(2025, 3, 10), date(2025, 3, 10))
    assert await upsert_minute_bars(conn, minutes) == minutes.height
    before = await relation_tuples(conn, "market_candles_5m")
    assert await upsert_minute_bars(conn, minutes) == 0
    assert await relation_tuples(conn, "market_candles_5m") == before


async def test_a_batch_repeating_a_minute_keeps_the_last_row(conn) -> None:
    ts = datetime(2025, 3, 10, 1, 0, tzinfo=UTC)
    bars = [
        MinuteBar("005930", ts, 100, 110, 90, 105, 10),
        MinuteBar("005930", ts, Decimal("100.5"), 120, 90, 101, 20),
    ]
    assert await upsert_minute_bars(conn, bars) == 1
    row = await conn.fetchrow("SELECT open, high, volume FROM market_candles_5m")
    assert (row["open"], row["high"], row["volume"]) == (Decimal("100.5"), 120, 20)


@pytest.mark.parametrize(
    ("bar", "reason"),
    [
        (
            MinuteBar("005930", datetime(2025, 3, 10, 1, tzinfo=UTC), 100, 90, 95, 95, 1),
            "high < low",
        ),
        (
            MinuteBar("005930", datetime(2025, 3, 10, 1, tzinfo=UTC), 100, 100, 100, 100, -1),
            "negative volume",
        ),
        (
            MinuteBar("005930", datetime(2025, 3, 10, 1, 0, 30, tzinfo=UTC), 1, 1, 1, 1, 1),
            "start of a minute",
        ),
    ],
)
async def test_invalid_rows_are_rejected_and_nothing_is_written(conn, bar, reason) -> None:
    good = MinuteBar("005930", datetime(2025, 3, 10, 2, tzinfo=UTC), 100, 100, 100, 100, 1)
    with pytest.raises(InvalidCandlesError, match=reason) as caught:
        await upsert_minute_bars(conn, [good, bar])
    assert caught.value.problems[0][0] == 2
    assert await conn.fetchval("SELECT count(*) FROM market_candles") == 0


async def test_refresh_rebuilds_aggregates_after_rows_are_deleted(conn) -> None:
    mode = await conn.fetchval("SELECT value FROM kisray_meta WHERE key = 'db_mode'")
    minutes = synthetic_minute_bars(("005930",), date(2025, 3, 10), date(2025, 3, 11))
    await upsert_minute_bars(conn, minutes)
    cutoff = datetime(2025, 3, 10, 3, 7, tzinfo=UTC)
    await conn.execute(
        "DELETE FROM market_candles WHERE ts >= $1 AND ts < $2",
        cutoff,
        cutoff + timedelta(hours=30),
    )
    await refresh_aggregates(conn, cutoff, cutoff + timedelta(hours=30), mode=mode)
    remaining = minutes.filter(
        (pl.col("ts") < cutoff) | (pl.col("ts") >= cutoff + timedelta(hours=30))
    )
    for interval, (relation, _, _) in AGGREGATES.items():
        got = await relation_tuples(conn, relation)
        assert got == as_tuples(expected_aggregate(remaining, interval)), relation


@pytest.mark.parametrize("minute", [3, 18, 57])  # first, middle and last 5m of a 15m bucket
async def test_late_corrections_reach_every_level(conn, minute: int) -> None:
    """Corrected minutes days apart, refreshed together, change their buckets at every level:
    also the last bucket of a stacked aggregate's refresh window. (TimescaleDB 2.28.3 left that
    one stale in 15m, while 5m and 1h had it, when its source logged many changed ranges.)"""
    mode = await conn.fetchval("SELECT value FROM kisray_meta WHERE key = 'db_mode'")
    # Recent days, inside the policies' reach: the scheduler refreshes them too, as live data.
    today = datetime.now(UTC).date()
    minutes = synthetic_minute_bars(
        ("005930", "000660"), today - timedelta(days=56), today - timedelta(days=42)
    )
    await upsert_minute_bars(conn, minutes)
    await refresh_aggregates(conn, minutes["ts"].min(), minutes["ts"].max(), mode=mode)
    days = sorted(set(minutes["ts"].dt.date().to_list()))
    first = datetime.combine(days[1], time(2, 10), tzinfo=UTC)
    last = datetime.combine(days[-1], time(4, minute), tzinfo=UTC)
    target = (pl.col("symbol") == "000660") & pl.col("ts").is_in([first, last])
    corrected = minutes.filter(target).with_columns(
        close=pl.col("high"), volume=pl.col("volume") + 1_000
    )
    assert corrected.height == 2
    await upsert_minute_bars(conn, corrected)
    await refresh_aggregates(conn, first, last + timedelta(minutes=1), mode=mode)
    now_correct = pl.concat([minutes.filter(~target), corrected])
    for interval, (relation, _, _) in AGGREGATES.items():
        got = await relation_tuples(conn, relation)
        assert got == as_tuples(expected_aggregate(now_correct, interval)), relation
