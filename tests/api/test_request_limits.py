"""Request-size limits in the error envelope: a request target over 8 KiB gets 414 URI_TOO_LONG,
headers over 32 KiB 431 HEADERS_TOO_LARGE, both with X-Request-ID — in-process on the real app,
then through the replica's own HTTP server, whose parser must let such requests reach the app."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn.config

from api import ingress
from api.app import app
from api.middleware import MAX_HEADER_BYTES, MAX_URL_BYTES

RID = "limits-test-1"


def in_process() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


def assert_envelope(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text[:200]
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert error["code"] == code and error["request_id"] == RID
    assert reply.headers["x-request-id"] == RID
    assert "Traceback" not in reply.text


def padded_query(total: int) -> str:
    """`/openapi.json?pad=…` whose request target is `total` bytes long."""
    head = "/openapi.json?pad="
    return head + "a" * (total - len(head))


async def test_a_request_target_over_8_kib_gets_414_in_the_envelope() -> None:
    async with in_process() as client:
        reply = await client.get(padded_query(MAX_URL_BYTES + 1), headers={"X-Request-ID": RID})
        assert_envelope(reply, 414, "URI_TOO_LONG")
        assert (await client.get(padded_query(MAX_URL_BYTES))).status_code == 200
        long_path = await client.get("/" + "p" * MAX_URL_BYTES, headers={"X-Request-ID": RID})
        assert_envelope(long_path, 414, "URI_TOO_LONG")


async def test_headers_over_32_kib_get_431_in_the_envelope() -> None:
    async with in_process() as client:
        big = {"X-Request-ID": RID, "X-Pad": "b" * MAX_HEADER_BYTES}
        assert_envelope(await client.get("/openapi.json", headers=big), 431, "HEADERS_TOO_LARGE")
        fits = {"X-Request-ID": RID, "X-Pad": "b" * (MAX_HEADER_BYTES - 1024)}
        assert (await client.get("/openapi.json", headers=fits)).status_code == 200


def test_replica_server_defaults_pick_h11_with_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # Restored afterwards: other tests in this process build uvicorn Configs of their own.
    monkeypatch.setattr(uvicorn.config.Config, "__init__", uvicorn.config.Config.__init__)
    monkeypatch.setattr(ingress, "_server_defaults", {})
    ingress.set_server_defaults(**ingress.HTTP_SERVER_DEFAULTS)
    ingress.set_ws_compression(False)  # a second call extends the same defaults
    config = uvicorn.config.Config(app)
    assert config.http == "h11" and config.ws_per_message_deflate is False
    assert (
        config.h11_max_incomplete_event_size
        == ingress.HTTP_SERVER_DEFAULTS["h11_max_incomplete_event_size"]
    )
    assert uvicorn.config.Config(app, http="httptools").http == "httptools"  # explicit wins


# -- through the running app (Ray Serve, direct ingress: the replica's own uvicorn) ----------


def raw_get(base_url: str, target: str, headers: dict[str, str]) -> httpx.Response:
    """One GET on a plain socket: httpx itself refuses URLs over 64 KiB before sending."""
    where = urlsplit(base_url)
    lines = [f"GET {target} HTTP/1.1", f"Host: {where.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    pairs = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
    return httpx.Response(int(status_line.split()[1]), headers=pairs, content=body)


@pytest.mark.slow
def test_the_running_app_answers_a_100_kb_url_with_414(serve_url: str) -> None:
    started = time.perf_counter()
    target = f"/candles/005930?pad={'a' * 100_000}"
    reply = raw_get(serve_url, target, {"X-Request-ID": RID})
    assert_envelope(reply, 414, "URI_TOO_LONG")
    assert time.perf_counter() - started < 2.0


@pytest.mark.slow
def test_the_running_app_answers_a_100_kb_header_with_431_at_once(serve_url: str) -> None:
    started = time.perf_counter()
    reply = httpx.get(
        f"{serve_url}/openapi.json",
        headers={"X-Request-ID": RID, "X-Pad": "b" * 100_000},
        timeout=30,
    )
    assert_envelope(reply, 431, "HEADERS_TOO_LARGE")
    assert time.perf_counter() - started < 2.0
    assert httpx.get(f"{serve_url}/openapi.json", timeout=30).status_code == 200


@pytest.mark.slow
def test_a_request_head_past_the_servers_bound_is_still_refused(serve_url: str) -> None:
    """Past h11's bound (api.ingress) the server answers alone: a bare 400, the memory kept."""
    pad = "b" * (2 * int(ingress.HTTP_SERVER_DEFAULTS["h11_max_incomplete_event_size"]))  # type: ignore[call-overload]
    try:
        reply = httpx.get(f"{serve_url}/openapi.json", headers={"X-Pad": pad}, timeout=30)
    except httpx.HTTPError:
        return  # the server may close before the client has sent everything
    assert reply.status_code in (400, 431)
