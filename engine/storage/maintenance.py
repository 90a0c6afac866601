"""The engine's periodic storage job: aggregate freshness (self-refresh) and retention.

In PostgreSQL mode this is the only retention there is; in TimescaleDB mode it backs up the
policies, which can fail silently. Run one per deployment (the database tolerates more, but the
work would be repeated).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from engine.storage.freshness import FreshnessReport, ensure_fresh
from engine.storage.migrate import database_mode
from engine.storage.pool import CONNECTION_ERRORS
from engine.storage.retention import (
    RetentionPolicy,
    RetentionReport,
    apply_retention,
    sync_timescale_policies,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MaintenanceResult:
    freshness: FreshnessReport
    retention: RetentionReport | None


class StorageMaintenance:
    """`await run_once()` on demand, or `await run_forever(stop)` as a background task."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: RetentionPolicy,
        *,
        freshness_every_s: float = 60.0,
        retention_every_s: float = 3600.0,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._freshness_every_s = freshness_every_s
        self._retention_every_s = retention_every_s
        self._policies_synced = False
        self.last: MaintenanceResult | None = None

    async def run_once(self, *, retention: bool = True) -> MaintenanceResult:
        async with self._pool.acquire() as conn:
            if not self._policies_synced:
                if await database_mode(conn) == "timescaledb":
                    await sync_timescale_policies(conn, self._policy)
                self._policies_synced = True
            freshness = await ensure_fresh(conn)
            applied = await apply_retention(conn, self._policy) if retention else None
        self.last = MaintenanceResult(freshness, applied)
        return self.last

    async def run_forever(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_retention = loop.time()
        while not stop.is_set():
            due = loop.time() >= next_retention
            try:
                await self.run_once(retention=due)
                if due:
                    next_retention = loop.time() + self._retention_every_s
            except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                # Keep going: the database may come back; the next round retries.
                logger.warning("storage maintenance failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._freshness_every_s)
