"""How current the aggregates are, and making them current when they are not.

Per aggregate: its newest bucket against the bucket of the newest 1-minute row and, in
TimescaleDB mode, the materialization watermark and the state of the refresh and retention jobs
(`timescaledb_information.job_stats` / `job_errors`). Policies can fail silently (observed: every
scheduler-started job failing on one PostgreSQL minor release while `CALL run_job` worked), so
`ensure_fresh` refreshes the aggregates itself when a level is behind or its policy is failing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from engine.candles.store import LEVELS, AggregateLevel, refresh_aggregates
from engine.storage.migrate import DbMode, database_mode

logger = logging.getLogger(__name__)

# How far back a self-refresh reaches when a level was never materialized.
MAX_CATCH_UP = timedelta(days=60)
JOB_ERROR_WINDOW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class AggregateFreshness:
    interval: str
    relation: str
    newest_bucket: datetime | None
    expected_bucket: datetime | None  # the bucket the newest 1-minute row belongs to
    materialized_until: datetime | None = None  # TimescaleDB watermark
    refresh_failing: bool = False
    behind: bool = False
    # Seconds the level trails what it should hold by now: PostgreSQL, its newest bucket behind
    # the newest row's; TimescaleDB, the watermark behind what its policy should have
    # materialized (real-time aggregation still serves the rest). None when unknown.
    lag_s: float | None = None


@dataclass(frozen=True, slots=True)
class JobState:
    job_id: int
    kind: str  # refresh | retention | columnstore
    relation: str
    last_run_status: str | None
    last_successful_finish: datetime | None
    total_failures: int
    next_start: datetime | None
    recent_errors: tuple[str, ...] = ()
    scheduled: bool = True  # false: paused (alter_job(id, scheduled => false))
    overdue: bool = False  # its next start passed a schedule interval ago: nothing runs it

    @property
    def failing(self) -> bool:
        return self.last_run_status == "Failed"

    def describe(self) -> str | None:
        """One line for /health when the job needs an operator's eye, else None."""
        job = f"timescaledb job {self.job_id} ({self.kind} {self.relation})"
        error = self.recent_errors[0] if self.recent_errors else "no error recorded"
        if not self.scheduled:  # paused says why it no longer runs, a failure how it last ran
            return f"{job} paused" + (f"; its last run failed: {error}" if self.failing else "")
        if self.failing:
            return f"{job} failed: {error}"
        if self.overdue and self.next_start is not None:
            return f"{job} overdue since {self.next_start.isoformat()}"
        return None


@dataclass(frozen=True, slots=True)
class FreshnessReport:
    mode: DbMode
    newest_minute: datetime | None
    aggregates: tuple[AggregateFreshness, ...]
    jobs: tuple[JobState, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not any(a.behind or a.refresh_failing for a in self.aggregates) and not any(
            j.describe() for j in self.jobs
        )

    def as_dict(self) -> dict:
        def plain(value: object) -> object:
            return value.isoformat() if isinstance(value, datetime) else value

        return {
            "mode": self.mode,
            "ok": self.ok,
            "newest_minute": plain(self.newest_minute),
            "aggregates": {
                a.interval: {k: plain(v) for k, v in asdict(a).items()} for a in self.aggregates
            },
            "jobs": [
                {k: plain(v) for k, v in asdict(j).items()}
                | {"failing": j.failing, "warning": j.describe()}
                for j in self.jobs
            ],
        }


_KINDS = {
    "policy_refresh_continuous_aggregate": "refresh",
    "policy_retention": "retention",
    "policy_compression": "columnstore",
}


async def timescale_jobs(conn: asyncpg.Connection, now: datetime | None = None) -> list[JobState]:
    """kisray's policy jobs with their last outcome; relation = the cagg view or hypertable."""
    now = now or datetime.now(UTC)
    # TimescaleDB keeps ±infinity in these columns (never succeeded; a paused job's next start),
    # which no Python datetime can hold: read them as NULL.
    rows = await conn.fetch(
        """
        SELECT j.job_id, j.proc_name, coalesce(ca.view_name, j.hypertable_name) AS relation,
               s.last_run_status,
               CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END
                   AS last_successful_finish,
               coalesce(s.total_failures, 0) AS total_failures,
               CASE WHEN isfinite(s.next_start) THEN s.next_start END AS next_start,
               j.scheduled, j.schedule_interval
        FROM timescaledb_information.jobs j
        LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
        LEFT JOIN timescaledb_information.continuous_aggregates ca
               ON ca.materialization_hypertable_name = j.hypertable_name
              AND ca.materialization_hypertable_schema = j.hypertable_schema
        WHERE j.proc_name = ANY($1::text[])
        ORDER BY j.job_id
        """,
        list(_KINDS),
    )
    errors = await conn.fetch(
        """
        SELECT job_id, finish_time, sqlerrcode, err_message
        FROM timescaledb_information.job_errors
        WHERE finish_time > now() - $1::interval
        ORDER BY finish_time DESC
        """,
        JOB_ERROR_WINDOW,
    )
    by_job: dict[int, list[str]] = {}
    for e in errors:
        by_job.setdefault(e["job_id"], []).append(
            f"{e['finish_time'].isoformat()} {e['sqlerrcode']}: {e['err_message']}"
        )
    return [
        JobState(
            job_id=r["job_id"],
            kind=_KINDS[r["proc_name"]],
            relation=r["relation"],
            last_run_status=r["last_run_status"],
            last_successful_finish=r["last_successful_finish"],
            total_failures=r["total_failures"],
            next_start=r["next_start"],
            recent_errors=tuple(by_job.get(r["job_id"], [])[:5]),
            scheduled=r["scheduled"],
            overdue=_overdue(r["scheduled"], r["next_start"], r["schedule_interval"], now),
        )
        for r in rows
    ]


def _overdue(
    scheduled: bool, next_start: datetime | None, every: timedelta | None, now: datetime
) -> bool:
    # A scheduler that runs keeps next_start ahead of now, give or take one run's length.
    grace = max(every or timedelta(0), timedelta(minutes=1))
    return scheduled and next_start is not None and next_start < now - grace


async def _newest_minute(conn: asyncpg.Connection) -> datetime | None:
    return await conn.fetchval("SELECT max(ts) FROM market_candles WHERE \"interval\" = '1m'")


async def _newest_bucket(conn: asyncpg.Connection, level: AggregateLevel) -> datetime | None:
    return await conn.fetchval(f"SELECT max(ts) FROM {level.relation}")


async def _watermark(conn: asyncpg.Connection, level: AggregateLevel) -> datetime | None:
    # Never materialized, the watermark is TimescaleDB's minimum time (4714 BC, or -infinity),
    # which no Python datetime can hold: compare in SQL and read it as NULL.
    return await conn.fetchval(
        """
        SELECT CASE WHEN w > '1971-01-01'::timestamptz THEN w END
        FROM (SELECT _timescaledb_functions.to_timestamp(
                         _timescaledb_functions.cagg_watermark(mat_hypertable_id)) AS w
              FROM _timescaledb_catalog.continuous_agg
              WHERE user_view_name = $1) AS watermark
        """,
        level.cagg,
    )


def _seconds(delta: timedelta) -> float:
    return max(delta.total_seconds(), 0.0)


def _materialization_target(
    level: AggregateLevel, newest_minute: datetime, now: datetime
) -> datetime:
    """Raw time up to which the level's policy should have materialized by now."""
    return min(now - level.end_offset, newest_minute)


async def check_freshness(conn: asyncpg.Connection, now: datetime | None = None) -> FreshnessReport:
    now = now or datetime.now(UTC)
    mode = await database_mode(conn) or "postgres"
    newest_minute = await _newest_minute(conn)
    jobs = await timescale_jobs(conn, now) if mode == "timescaledb" else []
    failing_refresh = {j.relation for j in jobs if j.kind == "refresh" and j.failing}
    levels: list[AggregateFreshness] = []
    for level in LEVELS:
        newest = await _newest_bucket(conn, level)
        expected = level.label(newest_minute) if newest_minute else None
        if mode == "postgres":
            behind = expected is not None and (newest is None or newest < expected)
            lag = _seconds(expected - newest) if expected and newest else None
            levels.append(
                AggregateFreshness(
                    level.interval,
                    level.relation,
                    newest,
                    expected,
                    behind=behind,
                    lag_s=0.0 if expected is None else lag,
                )
            )
            continue
        watermark = await _watermark(conn, level)
        behind = False
        lag = 0.0
        if newest_minute is not None:
            target = _materialization_target(level, newest_minute, now)
            allowed = 2 * level.schedule + level.width
            behind = target - (watermark or datetime.min.replace(tzinfo=UTC)) > allowed
            # Whole buckets only: the one holding the target is not due yet.
            due = level.label(target) - level.shift
            lag = _seconds(due - watermark) if watermark else None
        levels.append(
            AggregateFreshness(
                level.interval,
                level.relation,
                newest,
                expected,
                materialized_until=watermark,
                refresh_failing=level.cagg in failing_refresh,
                behind=behind,
                lag_s=lag,
            )
        )
    return FreshnessReport(mode, newest_minute, tuple(levels), tuple(jobs))


async def ensure_fresh(conn: asyncpg.Connection, now: datetime | None = None) -> FreshnessReport:
    """Refresh the aggregates if any is behind or its policy is failing; returns the new state.

    Must not run inside a transaction (TimescaleDB refreshes refuse to).
    """
    now = now or datetime.now(UTC)
    report = await check_freshness(conn, now)
    stale = [a for a in report.aggregates if a.behind or a.refresh_failing]
    if not stale or report.newest_minute is None:
        return report
    floor = report.newest_minute - MAX_CATCH_UP
    starts = []
    for a in stale:
        known = a.materialized_until if report.mode == "timescaledb" else a.newest_bucket
        starts.append(max(known - timedelta(days=1), floor) if known else floor)
    start = min(starts)
    logger.warning(
        "aggregates behind or failing (%s); refreshing from %s",
        ", ".join(a.interval for a in stale),
        start.isoformat(),
    )
    await refresh_aggregates(
        conn, start, report.newest_minute + timedelta(minutes=1), mode=report.mode, now=now
    )
    return await check_freshness(conn, now)
