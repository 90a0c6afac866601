"""What /health concludes from the parts' reports: overall status, problems, aggregate lag.

Pure functions over the plain dicts the parts report (database health, KIS feed stats, recorder
health, freshness report), so the rules are testable without a cluster.

Essential (a problem makes /health answer 503 "degraded"): the database is reachable, and the
KIS socket and the recorder, when they run, answer and are not stopped. Everything else (a
reconnecting socket, a lagging aggregate, a failing TimescaleDB job, a write backlog) is listed
under `warnings` with status still "ok": the API keeps serving what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

NOT_STARTED = "not_started"
UNREACHABLE = "unreachable"
# A recorder backlog above this many rows is worth a warning (the writes are falling behind).
BACKLOG_WARNING_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class HealthVerdict:
    status: str  # "ok" | "degraded"
    problems: tuple[str, ...]  # essential: why the status is degraded
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def judge(database: dict, kis: dict, recorder: dict, aggregates: dict | None) -> HealthVerdict:
    problems: list[str] = []
    warnings: list[str] = []

    if not database.get("reachable"):
        problems.append(f"database unreachable ({database.get('error') or 'unknown'})")

    kis_state = kis.get("state", NOT_STARTED)
    if kis_state in (UNREACHABLE, "stopped"):
        problems.append(f"kis socket {kis_state}")
    elif kis_state not in (NOT_STARTED, "connected"):
        warnings.append(f"kis socket {kis_state}")

    recorder_state = recorder.get("state", recorder.get("status", NOT_STARTED))
    if recorder_state == UNREACHABLE:
        problems.append("recorder unreachable")
    elif recorder_state == "degraded":
        warnings.append(f"recorder degraded ({recorder.get('last_error') or 'database'})")
    rows = ((recorder.get("backlog") or {}).get("rows")) or 0
    if rows > BACKLOG_WARNING_ROWS:
        warnings.append(f"recorder backlog {rows} rows")

    if aggregates:
        for interval, state in (aggregates.get("aggregates") or {}).items():
            if state.get("refresh_failing"):
                warnings.append(f"aggregate {interval} refresh failing")
            elif state.get("behind"):
                warnings.append(f"aggregate {interval} behind")
        for job in aggregates.get("jobs") or ():
            if job.get("warning"):  # failing, paused or overdue: id, relation, last error
                warnings.append(job["warning"])
    elif database.get("reachable"):
        warnings.append("aggregate freshness unknown")

    return HealthVerdict("degraded" if problems else "ok", tuple(problems), tuple(warnings))


def aggregate_lag_seconds(aggregates: dict | None) -> dict[str, float]:
    """Per interval: seconds the aggregate trails what it should hold (the freshness report's
    `lag_s`; from a report without it, the newest row's bucket against the aggregate's newest
    bucket). 0 when current or when there is no data at all; left out when unknown."""
    lags: dict[str, float] = {}
    for interval, state in ((aggregates or {}).get("aggregates") or {}).items():
        if "lag_s" in state:
            if state["lag_s"] is not None:
                lags[interval] = float(state["lag_s"])
            continue
        expected, newest = state.get("expected_bucket"), state.get("newest_bucket")
        if expected is None:
            lags[interval] = 0.0
            continue
        if newest is None:
            continue  # nothing materialized yet: the lag is unknown, not a number
        lag = _parse(expected) - _parse(newest)
        lags[interval] = max(lag.total_seconds(), 0.0)
    return lags


def _parse(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
