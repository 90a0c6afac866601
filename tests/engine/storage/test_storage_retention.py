"""Retention removes exactly the rows older than each relation's cutoff, and nothing else."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import polars as pl
import pytest

from engine.candles.store import refresh_aggregates, upsert_minute_bars
from engine.config import load_settings
from engine.history.sample_data import synthetic_minute_bars
from engine.storage.retention import RetentionPolicy, apply_retention, cutoffs, kst_day_start
from tests.engine.storage_support import BACKENDS, fresh_database, relation_tuples

NOW = datetime(2025, 3, 20, 3, 0, tzinfo=UTC)  # 12:00 KST on Thursday the 20th
RELATIONS = {
    "1m": "candles_1m",
    "5m": "market_candles_5m",
    "15m": "market_candles_15m",
    "1h": "market_candles_1h",
    "1d": "market_candles_1d",
}


@pytest.fixture(params=BACKENDS)
async def conn(request: pytest.FixtureRequest) -> asyncpg.Connection:
    connection = await asyncpg.connect(await fresh_database(request.param, request))
    yield connection
    await connection.close()


def test_cutoffs_fall_on_kst_day_starts() -> None:
    assert kst_day_start(datetime(2025, 3, 10, 14, 59, tzinfo=UTC)) == datetime(
        2025, 3, 9, 15, 0, tzinfo=UTC
    )
    assert kst_day_start(datetime(2025, 3, 10, 15, 0, tzinfo=UTC)) == datetime(
        2025, 3, 10, 15, 0, tzinfo=UTC
    )
    policy = RetentionPolicy({"1m": timedelta(days=5), "1d": None})
    # 5 days before 12:00 KST on the 20th is 12:00 KST on the 15th: keep from the 15th on.
    assert cutoffs(policy, NOW) == {"1m": datetime(2025, 3, 14, 15, tzinfo=UTC), "1d": None}


def test_policy_from_settings_maps_zero_to_forever() -> None:
    policy = RetentionPolicy.from_settings(load_settings(retention_1m_days=90))
    assert policy.keep["1m"] == timedelta(days=90)
    assert policy.keep["1d"] is None


async def test_retention_removes_exactly_what_is_older(conn) -> None:
    minutes = synthetic_minute_bars(("005930", "000660"), date(2025, 2, 24), date(2025, 3, 19))
    await upsert_minute_bars(conn, minutes)
    if await conn.fetchval("SELECT value FROM kisray_meta WHERE key = 'db_mode'") == "timescaledb":
        # Materialize first, as the loader does: caggs only keep what they materialized.
        await refresh_aggregates(conn, minutes["ts"].min(), NOW)
    before = {k: await relation_tuples(conn, r) for k, r in RELATIONS.items()}
    policy = RetentionPolicy(
        {
            "1m": timedelta(days=5),
            "5m": timedelta(days=8),
            "15m": timedelta(days=8),
            "1h": timedelta(days=12),
            "1d": None,
        }
    )
    report = await apply_retention(conn, policy, now=NOW)
    limits = cutoffs(policy, NOW)
    for interval, relation in RELATIONS.items():
        after = await relation_tuples(conn, relation)
        cutoff = limits[interval]
        if cutoff is None:
            assert after == before[interval], relation
            continue
        label_cutoff = cutoff + timedelta(hours=9) if interval == "1d" else cutoff
        kept = [row for row in before[interval] if row[1] >= label_cutoff]
        if report.mode == "postgres":
            assert after == kept, relation
            assert report.removed[interval] == len(before[interval]) - len(kept)
        else:
            # TimescaleDB drops whole chunks: everything newer stays, some older may too
            # (aggregate chunks span 70 days by default, so only the raw table must shrink).
            assert set(kept) <= set(after), relation
            if interval == "1m":
                assert len(after) < len(before[interval])
    # The raw rows are gone but the longer-lived aggregates still cover that period.
    raw_cutoff = limits["1m"]
    assert await conn.fetchval(
        "SELECT count(*) FROM market_candles_5m WHERE ts < $1 AND ts >= $2",
        raw_cutoff,
        limits["5m"],
    ) == len(
        minutes.filter((pl.col("ts") < raw_cutoff) & (pl.col("ts") >= limits["5m"]))
        .with_columns(pl.col("ts").dt.truncate("5m"))
        .unique(["symbol", "ts"])
    )
