"""The database goes away and comes back: 503 DB_CONNECTION_ERROR with the trace in the log under
the client's request id, then 200 again without restarting anything (isolated app, own DB)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.isolated_stack import SYMBOL, IsolatedStack

pytestmark = pytest.mark.slow


PARAMS = {"interval": "5m", "from": "2023-06-12T09:00", "to": "2023-06-12T10:00"}


def _log_text(stack: IsolatedStack) -> str:
    return "\n".join(p.read_text(errors="replace") for p in stack.log_dir.glob("*.log*"))


def _wait_for(predicate, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def test_candles_503_while_the_database_is_down_then_200_by_itself(iso: IsolatedStack) -> None:
    client = httpx.Client(base_url=iso.base_url, headers=iso.auth(), timeout=30)
    before = client.get(f"/candles/{SYMBOL}", params=PARAMS)
    assert before.status_code == 200, before.text
    assert before.json()["candles"]

    iso.database.stop()
    try:
        down = client.get(
            f"/candles/{SYMBOL}", params=PARAMS, headers={"X-Request-ID": "outage-rid-1"}
        )
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert error["code"] == "DB_CONNECTION_ERROR"
        assert error["request_id"] == "outage-rid-1"
        assert down.headers["x-request-id"] == "outage-rid-1"

        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        assert health.json()["database"]["reachable"] is False

        def trace_logged() -> bool:
            lines = _log_text(iso).splitlines()
            marked = [i for i, line in enumerate(lines) if "outage-rid-1" in line]
            return bool(marked) and any(
                "Traceback (most recent call last)" in line
                for line in lines[marked[0] : marked[0] + 5]
            )

        assert _wait_for(trace_logged), "no stack trace under the request id in the log"
    finally:
        iso.database.start()

    def recovered() -> httpx.Response | None:
        reply = client.get(f"/candles/{SYMBOL}", params=PARAMS)
        return reply if reply.status_code == 200 else None

    after = _wait_for(recovered)
    assert after is not None, "the API did not recover after the database came back"
    assert after.json()["candles"] == before.json()["candles"]
    assert client.get("/health").json()["database"]["reachable"] is True
