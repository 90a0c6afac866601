"""Freshness reporting and the engine's own refresh when an aggregate falls behind."""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest

from engine.db.candles import upsert_minute_bars
from engine.db.freshness import check_freshness, ensure_fresh
from engine.db.maintenance import StorageMaintenance
from engine.db.pool import create_pool
from engine.db.retention import RetentionPolicy
from engine.sample_data import synthetic_minute_bars
from tests.engine.storage_support import (
    AGGREGATES,
    BACKENDS,
    as_tuples,
    expected_aggregate,
    fresh_database,
    relation_tuples,
)


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest) -> str:
    return await fresh_database(request.param, request)


async def test_empty_database_is_fresh(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        report = await check_freshness(conn)
    finally:
        await conn.close()
    assert report.newest_minute is None
    assert [a.interval for a in report.aggregates] == ["5m", "15m", "1h", "1d"]
    assert not any(a.behind for a in report.aggregates)


async def test_a_lagging_aggregate_is_reported_and_refreshed(db_url: str) -> None:
    minutes = synthetic_minute_bars(("005930", "000660"), date(2025, 3, 10), date(2025, 3, 11))
    conn = await asyncpg.connect(db_url)
    try:
        await upsert_minute_bars(conn, minutes)
        report = await check_freshness(conn)
        assert report.newest_minute == minutes["ts"].max()
        if report.mode == "postgres":
            assert report.ok
            # Lose the newest hour of 5m buckets behind the engine's back.
            await conn.execute(
                "DELETE FROM market_candles_5m WHERE ts >= $1",
                report.newest_minute.replace(minute=0),
            )
            report = await check_freshness(conn)
        else:
            # Created WITH NO DATA and the policies have not run: nothing materialized yet.
            assert {j.kind for j in report.jobs} >= {"refresh", "retention"}
        lagging = {a.interval for a in report.aggregates if a.behind}
        assert "5m" in lagging and not report.ok
        fixed = await ensure_fresh(conn)
        assert not any(a.behind for a in fixed.aggregates)
        for interval, (relation, _, _) in AGGREGATES.items():
            got = await relation_tuples(conn, relation)
            assert got == as_tuples(expected_aggregate(minutes, interval)), relation
    finally:
        await conn.close()


async def test_maintenance_round_reports_freshness_and_applies_retention(db_url: str) -> None:
    pool = await create_pool(db_url, max_size=2)
    try:
        await upsert_minute_bars(
            pool, synthetic_minute_bars(("005930",), date(2025, 3, 10), date(2025, 3, 10))
        )
        result = await StorageMaintenance(pool, RetentionPolicy()).run_once()
        assert result.freshness.newest_minute is not None
        assert result.retention is not None and "1m" in result.retention.cutoffs
        data = result.freshness.as_dict()
        assert set(data["aggregates"]) == {"5m", "15m", "1h", "1d"}
    finally:
        await pool.close()
