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
