"""Shared helpers for the candle-storage tests: fresh migrated databases in either mode, and an
independent polars recomputation of every aggregate to compare the database against."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import asyncpg
import polars as pl
import pytest

from engine.db.migrate import migrate

TIMESCALE_URL = os.environ.get("KISRAY_TEST_TIMESCALE_URL")
BACKENDS = [
    pytest.param("postgres", id="postgres"),
    pytest.param(
        "timescaledb",
        id="timescaledb",
        marks=[
            pytest.mark.timescale,
            pytest.mark.skipif(
                TIMESCALE_URL is None,
                reason="KISRAY_TEST_TIMESCALE_URL is not set (needs a TimescaleDB server)",
            ),
        ],
    ),
]
AGGREGATES = {
    "5m": ("market_candles_5m", "5m", timedelta(0)),
    "15m": ("market_candles_15m", "15m", timedelta(0)),
    "1h": ("market_candles_1h", "1h", timedelta(0)),
    "1d": ("market_candles_1d", "1d", timedelta(hours=9)),
}


def _with_database(url: str, name: str) -> str:
    before, _, query = url.partition("?")
    base = before.rsplit("/", 1)[0]
    return f"{base}/{name}?{query}" if query else f"{base}/{name}"


async def fresh_database(backend: str, make_database: Callable[[], str]) -> str:
    """URL of a new database with every migration applied, on the backend's server."""
    if backend == "postgres":
        url = make_database()
    else:
        assert TIMESCALE_URL is not None
        name = f"t_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(TIMESCALE_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = _with_database(TIMESCALE_URL, name)
    report = await migrate(url)
    assert report.mode == backend
    return url


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
