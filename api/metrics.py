"""Prometheus metrics of one API replica, exposed as text by GET /metrics (prometheus_client).

Request counters and latency histograms are recorded by api.middleware as requests finish. The
state of the other parts (KIS socket, recorder backlog, aggregate lag, the replica's WebSocket
hub) is sampled when /metrics is scraped, so a scrape costs a few actor calls and one query,
never a background task. Every name starts with `kisray_`; docs/operations.md lists them.

`WS /ws` counts client messages by op in `WS_CLIENT_MESSAGES` (subscribe, unsubscribe, ping,
other).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "kisray_http_requests",
    "HTTP requests by route template, method and status code",
    ["route", "method", "code"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "kisray_http_request_duration_seconds",
    "HTTP request latency by route template and method",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
WS_CLIENTS = Gauge(
    "kisray_ws_clients", "WebSocket clients connected to this replica", registry=REGISTRY
)
WS_MESSAGES_IN = Gauge(
    "kisray_ws_upstream_records",
    "records this replica's hub received from the KIS socket (monotonic)",
    registry=REGISTRY,
)
WS_MESSAGES_OUT = Gauge(
    "kisray_ws_deliveries",
    "messages this replica's hub queued for WebSocket clients (monotonic)",
    registry=REGISTRY,
)
WS_CLIENT_MESSAGES = Counter(
    "kisray_ws_client_messages",
    "messages received from WebSocket clients, by op",
    ["op"],
    registry=REGISTRY,
)
KIS_STATE = Gauge(
    "kisray_kis_connected", "1 while the KIS socket is connected, else 0", registry=REGISTRY
)
KIS_RECONNECTS = Gauge(
    "kisray_kis_reconnects", "KIS socket reconnects since it started (monotonic)", registry=REGISTRY
)
KIS_REGISTRATIONS = Gauge(
    "kisray_kis_registrations", "KIS realtime registrations in use", registry=REGISTRY
)
KIS_LAST_MESSAGE_AGE = Gauge(
    "kisray_kis_last_message_age_seconds",
    "seconds since the KIS socket last received a message",
    registry=REGISTRY,
)
RECORDER_BACKLOG = Gauge(
    "kisray_recorder_backlog_rows",
    "closed 1-minute bars waiting to be written (memory and spill files)",
    registry=REGISTRY,
)


class _RecorderRepairs:
    """The recorder counts its minute repairs itself; exposed as a counter with the recorder's
    own value (it starts again at 0 when the recorder restarts: a counter reset to Prometheus),
    so every replica reports the same number instead of adding its own deltas."""

    def __init__(self) -> None:
        self.minutes = 0.0
        self.pending = 0.0

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "kisray_recorder_minute_repairs",
            "1-minute bars the recorder repaired from the KIS minute chart",
            value=self.minutes,
        )
        yield GaugeMetricFamily(
            "kisray_recorder_minute_repairs_pending",
            "1-minute bars the recorder still has to repair",
            value=self.pending,
        )


RECORDER_REPAIRS = _RecorderRepairs()
REGISTRY.register(RECORDER_REPAIRS)
AGGREGATE_LAG = Gauge(
    "kisray_aggregate_lag_seconds",
    "how far each aggregate's newest bucket is behind the newest 1-minute candle",
    ["interval"],
    registry=REGISTRY,
)
DATABASE_UP = Gauge(
    "kisray_database_up", "1 when the database answered the last scrape", registry=REGISTRY
)


def observe_request(route: str, method: str, code: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(code)).inc()
    REQUEST_SECONDS.labels(route, method).observe(seconds)


def sample(snapshot: dict) -> None:
    """Set the sampled gauges from an api.health snapshot (parts missing are left out)."""
    kis = snapshot.get("kis") or {}
    KIS_STATE.set(1 if kis.get("state") == "connected" else 0)
    KIS_RECONNECTS.set(kis.get("reconnects") or 0)
    KIS_REGISTRATIONS.set(kis.get("registrations") or 0)
    age = kis.get("last_message_age_s")
    KIS_LAST_MESSAGE_AGE.set(age if isinstance(age, int | float) else float("nan"))

    recorder = snapshot.get("recorder") or {}
    RECORDER_BACKLOG.set((recorder.get("backlog") or {}).get("rows") or 0)
    repairs = recorder.get("repairs") or {}
    RECORDER_REPAIRS.minutes = float(repairs.get("minutes") or 0)
    RECORDER_REPAIRS.pending = float(repairs.get("pending") or 0)

    DATABASE_UP.set(1 if (snapshot.get("database") or {}).get("reachable") else 0)
    for interval, lag in (snapshot.get("aggregate_lag_s") or {}).items():
        AGGREGATE_LAG.labels(interval).set(lag)

    hub = snapshot.get("hub") or {}
    WS_CLIENTS.set(hub.get("sockets") or 0)
    WS_MESSAGES_IN.set(hub.get("records") or 0)
    WS_MESSAGES_OUT.set(hub.get("deliveries") or 0)


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
