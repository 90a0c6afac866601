"""Shared helpers for the candle-storage tests: fresh migrated databases in either mode, and an
independent polars recomputation of every aggregate to compare the database against."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import asyncpg
import polars as pl
import pytest

from engine.storage.migrate import migrate

# The TimescaleDB server starts on first use (tests/conftest.py: timescale_url).
BACKENDS = [
    pytest.param("postgres", id="postgres"),
    pytest.param("timescaledb", id="timescaledb", marks=pytest.mark.timescale),
]
AGGREGATES = {
    "5m": ("market_candles_5m", "5m", timedelta(0)),
    "15m": ("market_candles_15m", "15m", timedelta(0)),
    "1h": ("market_candles_1h", "1h", timedelta(0)),
    "1d": ("market_candles_1d", "1d", timedelta(hours=9)),
}


def database_factory(backend: str, request: pytest.FixtureRequest) -> Callable[[], str]:
    """The session's factory of empty databases on the backend's server (started lazily)."""
    fixture = "make_database" if backend == "postgres" else "make_timescale_database"
    return request.getfixturevalue(fixture)


async def fresh_database(backend: str, request: pytest.FixtureRequest) -> str:
    """URL of a new database with every migration applied, on the backend's server."""
    url = database_factory(backend, request)()
    report = await migrate(url)
    assert report.mode == backend
    if backend == "timescaledb":
        await pause_background_retention(url)
    return url


async def pause_background_retention(url: str) -> None:
    """Stop the scheduler's retention and columnstore jobs in this database.

    The tests write fixed historic dates, older than the 365-day retention of 1-minute rows; the
    scheduler would drop (or compress) those chunks at a moment of its choosing, in the middle of
    a test. Retention itself is tested through apply_retention, which runs in the test's session.
    """
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
            "WHERE proc_name IN ('policy_retention', 'policy_compression')"
        )
    finally:
        await conn.close()


def expected_aggregate(minutes: pl.DataFrame, interval: str) -> pl.DataFrame:
    """The aggregate computed straight from 1-minute rows (prices as Decimal-able strings)."""
    _, every, shift = AGGREGATES[interval]
    labelled = minutes.with_columns(
        ((pl.col("ts") + shift).dt.truncate(every)).alias("label")
    ).sort("symbol", "ts")
    return (
        labelled.group_by("symbol", "label", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").sort_by(pl.col("high").cast(pl.Float64)).last(),
            pl.col("low").sort_by(pl.col("low").cast(pl.Float64)).first(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .rename({"label": "ts"})
        .sort("symbol", "ts")
    )


def as_tuples(frame: pl.DataFrame) -> list[tuple]:
    return [
        (
            r["symbol"],
            r["ts"],
            *(Decimal(str(r[c])) for c in ("open", "high", "low", "close")),
            int(r["volume"]),
        )
        for r in frame.sort("symbol", "ts").iter_rows(named=True)
    ]


async def relation_tuples(conn: asyncpg.Connection, relation: str) -> list[tuple]:
    rows = await conn.fetch(
        f"SELECT symbol, ts, open, high, low, close, volume FROM {relation} ORDER BY symbol, ts"
    )
    return [tuple(r) for r in rows]
