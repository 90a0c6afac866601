"""GET /health and the sampled part of GET /metrics: one snapshot of every part of the stack.

Each part is asked with a short timeout and reported as it answered; a part that is not running
is "not_started", one that does not answer is "unreachable". engine.health judges the snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from actors.names import KIS_SOCKET, SESSION_POOL
from actors.probe import NOT_STARTED, UNREACHABLE, probe
from actors.recorder import recorder_health
from engine.config import Settings
from engine.errors import DatabaseUnavailableError
from engine.health import aggregate_lag_seconds, judge
from engine.storage.freshness import check_freshness
from engine.storage.health import DatabaseHealth, check_database
from engine.storage.pool import CONNECTION_ERRORS

logger = logging.getLogger(__name__)

PART_TIMEOUT_S = 2.0

PoolGetter = Callable[[], Awaitable[asyncpg.Pool]]


async def snapshot(settings: Settings, get_pool: PoolGetter) -> dict:
    """Database, KIS socket, recorder, session pool, aggregates and this replica's hub, asked
    concurrently; judged ready or not (engine.health)."""
    (database, aggregates), kis, recorder, sessions = await asyncio.gather(
        _database(get_pool), kis_health(settings), recorder_health(PART_TIMEOUT_S), _sessions()
    )
    verdict = judge(
        database,
        kis,
        recorder,
        aggregates,
        sessions,
        live_required=settings.live_required,
        quiet_s=settings.kis_quiet_s,
    )
    return {
        "status": verdict.status,
        "problems": list(verdict.problems),
        "warnings": list(verdict.warnings),
        "database": database,
        "kis": kis,
        "aggregates": aggregates or {},
        "aggregate_lag_s": aggregate_lag_seconds(aggregates),
        "recorder": recorder,
        "sessions": sessions,
        "hub": _hub_stats(),
    }


async def _database(get_pool: PoolGetter) -> tuple[dict, dict | None]:
    try:
        pool = await get_pool()
    except DatabaseUnavailableError:
        return DatabaseHealth(False, None, None, None, error="unreachable").as_dict(), None
    database = await check_database(pool)
    if not database.reachable:
        return database.as_dict(), None
    try:
        async with asyncio.timeout(PART_TIMEOUT_S), pool.acquire() as conn:
            report = await check_freshness(conn)
    except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
        logger.warning("aggregate freshness check failed: %s", type(exc).__name__)
        return database.as_dict(), None
    return database.as_dict(), report.as_dict()


async def kis_health(settings: Settings) -> dict:
    """The KIS socket actor's state and counters, or "not_started" when there is none."""
    base = {"env": settings.kis_env, "ws_url": settings.ws_url, "rest_url": settings.rest_url}
    stats = await probe(KIS_SOCKET, "stats", PART_TIMEOUT_S)
    if stats.get("state") in (NOT_STARTED, UNREACHABLE):
        return base | {"registrations": 0} | stats
    stats.pop("ws_url", None)  # the configured one above is what operators compare against
    return base | stats


async def _sessions() -> dict:
    """The session pool's counts, "not_started" without one, "unreachable" if it does not answer
    (it restarts within seconds when its process dies)."""
    stats = await probe(SESSION_POOL, "stats", PART_TIMEOUT_S)
    return stats if "state" in stats else {"state": "ok", **stats}


def _hub_stats() -> dict:
    from api import hub

    replica_hub = getattr(hub, "_hub", None)  # started by the first /ws client of this replica
    return replica_hub.stats() if replica_hub is not None else {}
