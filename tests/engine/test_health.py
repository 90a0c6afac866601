"""engine.health: which parts make /health degraded, and the aggregate lag."""

from __future__ import annotations

from engine.health import aggregate_lag_seconds, judge

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


def test_reconnects_lag_and_failing_jobs_are_warnings() -> None:
    aggregates = {
        "aggregates": {"15m": {"behind": True}, "1h": {"refresh_failing": True}},
        "jobs": [{"job_id": 1001, "kind": "refresh", "failing": True}],
    }
    recorder = {"status": "degraded", "last_error": "OSError", "backlog": {"rows": 50_000}}
    verdict = judge(UP, {"state": "reconnecting"}, recorder, aggregates)
    assert verdict.ok
    assert set(verdict.warnings) == {
        "kis socket reconnecting",
        "recorder degraded (OSError)",
        "recorder backlog 50000 rows",
        "aggregate 15m behind",
        "aggregate 1h refresh failing",
        "timescaledb job 1001 (refresh) failed",
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
