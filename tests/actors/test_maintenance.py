"""The MaintenanceActor runs its rounds against its database without being asked."""

from __future__ import annotations

import asyncio
import time
from datetime import date

import asyncpg
import ray

from actors.maintenance import start_maintenance
from engine.candles.store import upsert_minute_bars
from engine.history.sample_data import synthetic_minute_bars
from engine.storage.migrate import migrate


async def _prepare(url: str) -> None:
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        bars = synthetic_minute_bars(["900950"], date(2023, 6, 12), date(2023, 6, 12), seed=3)
        await upsert_minute_bars(conn, bars)
    finally:
        await conn.close()


async def test_maintenance_reports_fresh_aggregates(ray_cluster, make_database) -> None:
    url = make_database()
    await _prepare(url)
    actor = start_maintenance(url, name="maintenance-test")
    try:
        deadline = time.monotonic() + 60
        report = None
        while report is None and time.monotonic() < deadline:
            report = await actor.last.remote()
            if report is None:
                await asyncio.sleep(0.5)
        assert report is not None, "no maintenance round finished within a minute"
        assert report["newest_minute"] is not None
        assert report["newest_minute"].startswith("2023-06-12")  # it read this database
        assert set(report["aggregates"]) >= {"5m", "15m", "1h", "1d"}
        assert report["ok"] is True
    finally:
        await actor.stop.remote()
        ray.kill(actor)
