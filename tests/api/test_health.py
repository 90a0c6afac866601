from __future__ import annotations

import httpx


def test_health_reports_the_database_mode_and_kis_endpoints(serve_url: str) -> None:
    reply = httpx.get(f"{serve_url}/health", timeout=10)
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "ok"
    assert body["database"]["reachable"] is True
    assert body["database"]["mode"] == "postgres"
    assert body["database"]["schema_version"] >= 1
    assert body["kis"]["env"] == "sim"
    assert set(body["kis"]) >= {"state", "env", "ws_url", "rest_url", "registrations"}


def test_health_reports_every_part(serve_url: str) -> None:
    body = httpx.get(f"{serve_url}/health", timeout=10).json()
    assert body["database"]["latency_ms"] >= 0
    assert body["kis"]["state"] in (
        "not_started",
        "idle",
        "connecting",
        "connected",
        "reconnecting",
    )
    assert "reconnects" in body["kis"] or body["kis"]["state"] == "not_started"
    assert body["aggregates"]["mode"] == "postgres"
    assert set(body["aggregates"]["aggregates"]) >= {"5m", "15m", "1h", "1d"}
    assert isinstance(body["aggregate_lag_s"], dict)
    assert "state" in body["recorder"] or "backlog" in body["recorder"]
    assert body["problems"] == []
    assert isinstance(body["warnings"], list)
