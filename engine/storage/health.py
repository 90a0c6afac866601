"""Database health for /health and `kisray status`: reachable, mode, round-trip latency."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

import asyncpg

from engine.storage.migrate import database_mode
from engine.storage.pool import CONNECTION_ERRORS


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    reachable: bool
    mode: str | None
    latency_ms: float | None
    schema_version: int | None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


HEALTH_TIMEOUT_S = 2.0


async def check_database(pool: asyncpg.Pool) -> DatabaseHealth:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S), pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
            latency_ms = (time.perf_counter() - started) * 1000
            mode = await database_mode(conn)
            version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
        # The class name is enough for operators; messages can carry connection strings.
        return DatabaseHealth(False, None, None, None, error=type(exc).__name__)
    return DatabaseHealth(True, mode, round(latency_ms, 2), version)
