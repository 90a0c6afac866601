"""GET /metrics: Prometheus text parsed back with prometheus_client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api import metrics


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = httpx.get(f"{base}/metrics", timeout=30)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _requests(samples, route: str, code: str) -> float:
    key = ("kisray_http_requests_total", (("code", code), ("method", "GET"), ("route", route)))
    return samples.get(key, 0.0)


def test_requests_are_counted_by_route_template_and_code(serve_url: str) -> None:
    before = _samples(serve_url)
    for symbol in ("999901", "999902", "999903"):
        reply = httpx.get(f"{serve_url}/candles/{symbol}", timeout=30)
        assert reply.status_code == 404
    httpx.get(f"{serve_url}/no/such/route", timeout=30)
    after = _samples(serve_url)

    assert (
        _requests(after, "/candles/{symbol}", "404") - _requests(before, "/candles/{symbol}", "404")
        == 3
    )
    assert _requests(after, "<unmatched>", "404") >= 1
    # One series per route template, not per symbol.
    assert not any("999901" in str(labels) for _, labels in after)
    latency = (
        "kisray_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/candles/{symbol}")),
    )
    assert after[latency] >= 3


def test_sampled_state_of_the_stack(serve_url: str) -> None:
    samples = _samples(serve_url)
    names = {name for name, _ in samples}
    assert samples[("kisray_database_up", ())] == 1
    assert {
        "kisray_kis_connected",
        "kisray_kis_reconnects",
        "kisray_recorder_backlog_rows",
        "kisray_recorder_minute_repairs_total",
        "kisray_ws_clients",
        "kisray_ws_deliveries",
    } <= names
    assert samples[("kisray_recorder_backlog_rows", ())] >= 0


def test_recorder_minute_repairs_are_the_recorders_own_count() -> None:
    def exposed() -> dict[str, float]:
        text = metrics.exposition()[0].decode()
        return {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("kisray_recorder_minute_repairs")
        }

    metrics.sample({"recorder": {"repairs": {"minutes": 7, "pending": 2}}})
    assert exposed() == {
        "kisray_recorder_minute_repairs_total": 7,
        "kisray_recorder_minute_repairs_pending": 2,
    }
    metrics.sample({"recorder": {"state": "not_started"}})
    assert exposed()["kisray_recorder_minute_repairs_total"] == 0
