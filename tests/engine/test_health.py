"""engine.health: which parts make /health degraded, and the aggregate lag."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.health import aggregate_lag_seconds, judge
from engine.storage.freshness import FreshnessReport, JobState

UP = {"reachable": True, "mode": "postgres"}
FRESH = {"aggregates": {"5m": {"behind": False, "refresh_failing": False}}, "jobs": []}


def test_everything_up_is_ok() -> None:
    verdict = judge(UP, {"state": "connected"}, {"status": "ok", "backlog": {"rows": 0}}, FRESH)
    assert (verdict.status, verdict.problems, verdict.warnings) == ("ok", (), ())


def test_database_down_is_degraded() -> None:
    verdict = judge({"reachable": False, "error": "unreachable"}, {}, {}, None)
    assert verdict.status == "degraded"
    assert verdict.problems == ("database unreachable (unreachable)",)


def test_parts_not_started_are_fine_but_silent_ones_are_not() -> None:
    assert judge(UP, {"state": "not_started"}, {"state": "not_started"}, FRESH).ok
    assert not judge(UP, {"state": "unreachable"}, {}, FRESH).ok
    assert not judge(UP, {}, {"state": "unreachable"}, FRESH).ok
    assert not judge(UP, {"state": "stopped"}, {}, FRESH).ok


CONNECTED = {
    "state": "connected",
    "registrations": 7,
    "live_registrations": 7,
    "refused": {},
    "last_message_age_s": 0.2,
}
RECORDING = {"status": "ok"}
POOL = {"state": "ok", "idle": 8}


def _problems(kis: dict, recorder: dict = RECORDING, sessions: dict = POOL) -> tuple[str, ...]:
    return judge(UP, kis, recorder, FRESH, sessions, live_required=True, quiet_s=15).problems


def test_live_stack_is_ready_only_when_a_new_tab_would_get_data() -> None:
    assert _problems(CONNECTED) == ()
    assert _problems({"state": "not_started"}) == ("kis socket not started",)
    assert _problems(CONNECTED, recorder={"state": "not_started"}) == ("recorder not started",)
    assert _problems(CONNECTED, sessions={"state": "unreachable"}) == ("session pool unreachable",)
    assert _problems(CONNECTED | {"live_registrations": 5}) == (
        "kis registrations: 5 of 7 acknowledged",
    )
    # A registration KIS refused is not waited for: a warning, still ready.
    refused = CONNECTED | {"live_registrations": 6, "refused": {"H0STCNT0:999999": "OPSP0017"}}
    verdict = judge(UP, refused, RECORDING, FRESH, POOL, live_required=True)
    assert verdict.ok and verdict.warnings == ("kis refused registrations ['H0STCNT0:999999']",)


def test_refusals_and_silence_say_why_the_stack_is_not_ready() -> None:
    in_use = {
        "state": "reconnecting",
        "last_error": "the app key is in use by another session (OPSP8996)",
    }
    assert _problems(in_use) == (
        "kis socket reconnecting (the app key is in use by another session (OPSP8996))",
    )
    assert _problems({"state": "connecting"}) == ("kis socket connecting",)
    assert _problems(CONNECTED | {"last_message_age_s": 21.4}) == ("kis socket silent for 21 s",)


def _job(job_id: int, **state: object) -> JobState:
    fields: dict = {
        "job_id": job_id,
        "kind": "refresh",
        "relation": "market_candles_5m",
        "last_run_status": "Success",
        "last_successful_finish": None,
        "total_failures": 0,
        "next_start": datetime(2025, 3, 10, 1, 0, tzinfo=UTC),
    }
    return JobState(**(fields | state))


def test_lag_backlog_and_failing_paused_or_overdue_jobs_are_warnings() -> None:
    jobs = (
        _job(
            1001,
            last_run_status="Failed",
            recent_errors=("2025-03-10T00:55:00+00:00 XX000: cannot drop portal",),
        ),
        _job(1002, relation="market_candles_1h", scheduled=False),
        _job(1003, kind="retention", relation="market_candles", overdue=True),
        _job(1004),
        _job(1005, relation="market_candles_15m", scheduled=False, last_run_status="Failed"),
    )
    report = FreshnessReport("timescaledb", None, (), jobs).as_dict()
    aggregates = {
        "aggregates": {"15m": {"behind": True}, "1h": {"refresh_failing": True}},
        "jobs": report["jobs"],
    }
    recorder = {"status": "degraded", "last_error": "OSError", "backlog": {"rows": 50_000}}
    verdict = judge(UP, CONNECTED, recorder, aggregates)
    assert verdict.ok
    assert set(verdict.warnings) == {
        "recorder degraded (OSError)",
        "recorder backlog 50000 rows",
        "aggregate 15m behind",
        "aggregate 1h refresh failing",
        "timescaledb job 1001 (refresh market_candles_5m) failed: "
        "2025-03-10T00:55:00+00:00 XX000: cannot drop portal",
        "timescaledb job 1002 (refresh market_candles_1h) paused",
        "timescaledb job 1005 (refresh market_candles_15m) paused; "
        "its last run failed: no error recorded",
        "timescaledb job 1003 (retention market_candles) overdue since 2025-03-10T01:00:00+00:00",
    }


def test_aggregate_lag_in_seconds() -> None:
    aggregates = {
        "aggregates": {
            "5m": {
                "expected_bucket": "2024-01-02T01:05:00+00:00",
                "newest_bucket": "2024-01-02T00:50:00+00:00",
            },
            "15m": {
                "expected_bucket": "2024-01-02T01:00:00+00:00",
                "newest_bucket": "2024-01-02T01:00:00+00:00",
            },
            "1h": {"expected_bucket": "2024-01-02T01:00:00+00:00", "newest_bucket": None},
            "1d": {"expected_bucket": None, "newest_bucket": None},
        }
    }
    assert aggregate_lag_seconds(aggregates) == {"5m": 900.0, "15m": 0.0, "1d": 0.0}
    assert aggregate_lag_seconds(None) == {}
    # A report's own lag wins (TimescaleDB: the watermark's lag); None means unknown.
    timescale = {"aggregates": {"5m": {"lag_s": 600.0}, "1h": {"lag_s": None}}}
    assert aggregate_lag_seconds(timescale) == {"5m": 600.0}
