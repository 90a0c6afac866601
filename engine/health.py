"""What /health concludes from the parts' reports: ready or not, problems, aggregate lag.

Pure functions over the plain dicts the parts report (database health, KIS feed stats, recorder
health, session pool stats, freshness report), so the rules are testable without a cluster.

Ready (200 "ok") means a client gets what it asks for: the database answers; and where live data
runs (always when `live_required`, which `kisray up` sets when it starts the socket actor and the
recorder), the KIS socket is connected with every registration acknowledged and has heard from
KIS lately, the recorder answers, and the session pool answers (a new tab would get data). Any
problem makes it 503 "degraded" with the reasons. Everything else (a lagging aggregate, a failing
TimescaleDB job, a write backlog, a registration KIS refused) is listed under `warnings` with
status still "ok": the API keeps serving what is stored.
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


def judge(
    database: dict,
    kis: dict,
    recorder: dict,
    aggregates: dict | None,
    sessions: dict | None = None,
    *,
    live_required: bool = False,
    quiet_s: float = 15.0,
) -> HealthVerdict:
    problems: list[str] = []
    warnings: list[str] = []

    if not database.get("reachable"):
        problems.append(f"database unreachable ({database.get('error') or 'unknown'})")

    problems += _kis_problems(kis, live_required, quiet_s)
    if kis.get("refused"):
        warnings.append(f"kis refused registrations {sorted(kis['refused'])}")

    recorder_state = recorder.get("state", recorder.get("status", NOT_STARTED))
    if recorder_state == UNREACHABLE:
        problems.append("recorder unreachable")
    elif recorder_state == NOT_STARTED and live_required:
        problems.append("recorder not started")
    elif recorder_state == "degraded":
        warnings.append(f"recorder degraded ({recorder.get('last_error') or 'database'})")
    rows = ((recorder.get("backlog") or {}).get("rows")) or 0
    if rows > BACKLOG_WARNING_ROWS:
        warnings.append(f"recorder backlog {rows} rows")

    sessions_state = (sessions or {}).get("state", NOT_STARTED)
    if sessions_state == UNREACHABLE and live_required:
        problems.append("session pool unreachable")

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


def _kis_problems(kis: dict, live_required: bool, quiet_s: float) -> list[str]:
    """Why the KIS socket would not give a new tab data, if it would not."""
    state = kis.get("state", NOT_STARTED)
    if state == NOT_STARTED:
        return ["kis socket not started"] if live_required else []
    if state in (UNREACHABLE, "stopped"):
        return [f"kis socket {state}"]
    if state != "connected":
        why = kis.get("last_error")
        return [f"kis socket {state}" + (f" ({why})" if why else "")]
    problems = []
    wanted = (kis.get("registrations") or 0) - len(kis.get("refused") or {})
    acked = kis.get("live_registrations")
    if acked is not None and acked < wanted:
        problems.append(f"kis registrations: {acked} of {wanted} acknowledged")
    age = kis.get("last_message_age_s")
    if age is not None and age > quiet_s:
        problems.append(f"kis socket silent for {age:.0f} s")
    return problems


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
