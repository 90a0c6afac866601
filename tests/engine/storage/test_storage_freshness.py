"""Freshness reporting and the engine's own refresh when an aggregate falls behind."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import polars as pl
import pytest

from engine.candles.store import LEVELS, upsert_minute_bars
from engine.history.sample_data import synthetic_minute_bars
from engine.storage.freshness import check_freshness, ensure_fresh
from engine.storage.maintenance import StorageMaintenance
from engine.storage.pool import create_pool
from engine.storage.retention import RetentionPolicy
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


async def _materialized_only(conn: asyncpg.Connection, cagg: str, relation: str) -> list[tuple]:
    """What the level holds materialized, without the real-time part over the raw rows."""
    await conn.execute(f"ALTER MATERIALIZED VIEW {cagg} SET (timescaledb.materialized_only = true)")
    try:
        return await relation_tuples(conn, relation)
    finally:
        await conn.execute(
            f"ALTER MATERIALIZED VIEW {cagg} SET (timescaledb.materialized_only = false)"
        )


@pytest.mark.timescale
async def test_with_every_refresh_policy_paused_the_watchdog_keeps_aggregates_materialized(
    request: pytest.FixtureRequest,
) -> None:
    """Scheduler-run jobs can fail on a whole PostgreSQL minor release (15.20 with stock 2.28.3);
    paused policies stand in for that here. The engine's watchdog must then materialize every
    level itself, up to the bucket its policy would have, each time it runs."""
    conn = await asyncpg.connect(await fresh_database("timescaledb", request))
    try:
        await conn.execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        )
        symbols = ("005930", "000660")
        written = synthetic_minute_bars(symbols, date(2025, 3, 10), date(2025, 3, 12))
        await upsert_minute_bars(conn, written)
        # The clock: just after the close of the 12th (15:31 KST).
        rounds = [(written, datetime(2025, 3, 12, 6, 31, tzinfo=UTC))]
        later = synthetic_minute_bars(symbols, date(2025, 3, 13), date(2025, 3, 13))
        # The next morning, minutes up to 12:00 KST arrive while the policies stay paused.
        later = later.filter(pl.col("ts") < datetime(2025, 3, 13, 3, 0, tzinfo=UTC))
        rounds.append((pl.concat([written, later]), datetime(2025, 3, 13, 3, 0, tzinfo=UTC)))
        for step, (minutes, now) in enumerate(rounds):
            if step:
                await upsert_minute_bars(conn, later)
            before = await check_freshness(conn, now)
            refresh_jobs = [j for j in before.jobs if j.kind == "refresh"]
            assert len(refresh_jobs) == 4 and all("paused" in j.describe() for j in refresh_jobs)
            assert {a.interval for a in before.aggregates if a.behind} >= {"5m", "15m", "1h"}
            assert all(a.lag_s is None or a.lag_s > 0 for a in before.aggregates if a.behind)

            after = await ensure_fresh(conn, now)
            for level in LEVELS:
                state = next(a for a in after.aggregates if a.interval == level.interval)
                due = level.label(min(now - level.end_offset, after.newest_minute)) - level.shift
                assert not state.behind and state.lag_s == 0, state
                assert state.materialized_until == due, state
                # Materialized, not only served in real time: every bucket below the watermark.
                stored = await _materialized_only(conn, level.cagg, level.relation)
                expected = as_tuples(expected_aggregate(minutes, level.interval))
                assert stored == [row for row in expected if row[1] < due + level.shift]
                assert await relation_tuples(conn, level.relation) == expected
    finally:
        await conn.close()
