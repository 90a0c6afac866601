"""Candle retention: how long each relation keeps its rows, and removing what is older.

Cutoffs fall on KST-day boundaries (15:00 UTC), so retention removes whole daily buckets and every
sub-daily bucket nests inside one: nothing is left half-deleted. PostgreSQL mode deletes rows
(`apply_retention`, run periodically by the engine); TimescaleDB mode has one policy job per
relation (migration 003) that `sync_timescale_policies` keeps at the configured values, and
`apply_retention` there drops whole chunks older than the cutoff.

A row written later into a period that retention already removed (a very old backfill) is kept
until the next run; the aggregates recompute such buckets from whatever 1-minute rows exist then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from engine.candles.store import LEVEL_BY_INTERVAL, RAW_RELATION
from engine.config import Settings
from engine.domain.kst import KST_OFFSET
from engine.storage.contention import retry_on_contention
from engine.storage.migrate import DbMode, database_mode

logger = logging.getLogger(__name__)

_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Interval → how long to keep it; None keeps it forever. '1m' is the raw table."""

    keep: Mapping[str, timedelta | None] = field(
        default_factory=lambda: {
            "1m": timedelta(days=365),
            "5m": timedelta(days=1095),
            "15m": timedelta(days=1095),
            "1h": timedelta(days=1825),
            "1d": None,
        }
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        days = {
            "1m": settings.retention_1m_days,
            "5m": settings.retention_5m_days,
            "15m": settings.retention_15m_days,
            "1h": settings.retention_1h_days,
            "1d": settings.retention_1d_days,
        }
        return cls({k: timedelta(days=v) if v > 0 else None for k, v in days.items()})


@dataclass(frozen=True, slots=True)
class RetentionReport:
    mode: DbMode
    cutoffs: Mapping[str, datetime | None]  # rows with bucket start before this are removed
    removed: Mapping[str, int]  # rows (PostgreSQL) or chunks (TimescaleDB)


def kst_day_start(ts: datetime) -> datetime:
    """Start (UTC) of the KST calendar day containing ts."""
    shifted = ts.astimezone(UTC) + KST_OFFSET
    midnight = shifted.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - KST_OFFSET


def cutoffs(policy: RetentionPolicy, now: datetime) -> dict[str, datetime | None]:
    """Per interval, the raw-time instant before which whole KST days are removed."""
    return {k: kst_day_start(now - keep) if keep else None for k, keep in policy.keep.items()}


def _relation(interval: str) -> str:
    return RAW_RELATION if interval == "1m" else LEVEL_BY_INTERVAL[interval].relation


async def apply_retention(
    conn: asyncpg.Connection, policy: RetentionPolicy, now: datetime | None = None
) -> RetentionReport:
    now = now or datetime.now(UTC)
    mode = await database_mode(conn) or "postgres"
    limits = cutoffs(policy, now)
    removed: dict[str, int] = {}
    for interval, cutoff in limits.items():
        if cutoff is None:
            continue
        if mode == "timescaledb":
            relation = RAW_RELATION if interval == "1m" else LEVEL_BY_INTERVAL[interval].cagg
            # The daily cagg's bucket column is the KST-day start, i.e. raw time: same cutoff.
            removed[interval] = await _drop_chunks(conn, relation, cutoff)
            continue
        # Daily rows are labelled 9 h after their KST-day start.
        label_cutoff = cutoff + KST_OFFSET if interval == "1d" else cutoff
        status = await conn.execute(
            f"DELETE FROM {_relation(interval)} WHERE ts < $1", label_cutoff
        )
        removed[interval] = int(status.rsplit(" ", 1)[1])
    if any(removed.values()):
        logger.info("retention removed %s (cutoffs %s)", removed, limits)
    return RetentionReport(mode, limits, removed)


# TimescaleDB's own jobs (a retention or refresh policy) can change the same chunk's catalog
# rows while drop_chunks runs; PostgreSQL then fails the statement with "tuple concurrently
# deleted" (or updated), XX000. The suite met it once in a few hundred runs. The other job has
# done or is doing the same work, so trying again a moment later is right.
DROP_CHUNKS_TRIES = 5
DROP_CHUNKS_RETRY_S = 0.2


async def _drop_chunks(conn: asyncpg.Connection, relation: str, cutoff: datetime) -> int:
    return await retry_on_contention(
        lambda: _drop_chunks_once(conn, relation, cutoff),
        lambda exc: (
            isinstance(exc, asyncpg.exceptions.InternalServerError) and "concurrently" in str(exc)
        ),
        tries=DROP_CHUNKS_TRIES,
        wait_s=DROP_CHUNKS_RETRY_S,
        what=f"drop_chunks on {relation}",
    )


async def _drop_chunks_once(conn: asyncpg.Connection, relation: str, cutoff: datetime) -> int:
    dropped = await conn.fetch(
        "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz)", relation, cutoff
    )
    return len(dropped)


async def sync_timescale_policies(conn: asyncpg.Connection, policy: RetentionPolicy) -> list[str]:
    """Make the TimescaleDB retention jobs match the policy; returns the relations changed."""
    current = {
        r["relation"]: r["drop_after"]
        for r in await conn.fetch(
            """
            SELECT coalesce(ca.view_name, j.hypertable_name) AS relation,
                   (j.config->>'drop_after')::interval AS drop_after
            FROM timescaledb_information.jobs j
            LEFT JOIN timescaledb_information.continuous_aggregates ca
                   ON ca.materialization_hypertable_name = j.hypertable_name
                  AND ca.materialization_hypertable_schema = j.hypertable_schema
            WHERE j.proc_name = 'policy_retention'
            """
        )
    }
    changed: list[str] = []
    for interval, keep in policy.keep.items():
        relation = RAW_RELATION if interval == "1m" else LEVEL_BY_INTERVAL[interval].cagg
        if current.get(relation) == keep:
            continue
        if relation in current:
            await conn.execute(
                "SELECT remove_retention_policy($1::regclass, if_exists => true)", relation
            )
        if keep is not None:
            await conn.execute(
                "SELECT add_retention_policy($1::regclass, drop_after => $2::interval)",
                relation,
                keep,
            )
        changed.append(relation)
    if changed:
        logger.info("retention policies updated: %s", ", ".join(changed))
    return changed
