"""Token auth on REST and WebSocket, CORS and the body limit, on the isolated app (token set)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api.security import OriginPolicy, bearer_token, is_same_origin, token_matches
from engine.config import load_settings
from tests.api.isolated_stack import CORS_ORIGIN, SYMBOL, IsolatedStack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(iso: IsolatedStack):
    with httpx.Client(base_url=iso.base_url, timeout=30) as http:
        yield http


def test_bearer_token_parsing_and_constant_time_match() -> None:
    settings = load_settings(api_token="s3cret-token")
    assert bearer_token("Bearer s3cret-token") == "s3cret-token"
    assert bearer_token("bearer   s3cret-token ") == "s3cret-token"
    assert bearer_token("Basic s3cret-token") == ""
    assert bearer_token(None) == ""
    assert token_matches("s3cret-token", settings)
    assert not token_matches("s3cret-tokem", settings)
    assert not token_matches("", settings)
    assert token_matches("", load_settings(api_token=None))


@pytest.mark.parametrize("path", ["/symbols", f"/candles/{SYMBOL}", "/udf/config", "/metrics"])
def test_rest_needs_the_token(client: httpx.Client, iso: IsolatedStack, path: str) -> None:
    missing = client.get(path)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "UNAUTHORIZED"
    assert missing.json()["error"]["request_id"] == missing.headers["x-request-id"]
    assert missing.headers["www-authenticate"] == "Bearer"

    wrong = client.get(path, headers={"Authorization": f"Bearer {iso.token}x"})
    assert wrong.status_code == 401
    assert iso.token not in wrong.text

    right = client.get(path, headers=iso.auth(), params={"interval": "1d"})
    assert right.status_code == 200, right.text


def test_health_stays_open(client: httpx.Client) -> None:
    reply = client.get("/health")
    assert reply.status_code == 200
    assert reply.json()["status"] == "ok"


def test_cors_allows_only_the_configured_origin(client: httpx.Client, iso: IsolatedStack) -> None:
    preflight = client.options(
        "/symbols",
        headers={
            "Origin": CORS_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == CORS_ORIGIN

    allowed = client.get("/symbols", headers=iso.auth() | {"Origin": CORS_ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()

    stranger = "https://evil.example.test"
    refused = client.options(
        "/symbols", headers={"Origin": stranger, "Access-Control-Request-Method": "GET"}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    plain = client.get("/symbols", headers=iso.auth() | {"Origin": stranger})
    assert "access-control-allow-origin" not in plain.headers


def test_request_body_over_the_limit_is_413(client: httpx.Client, iso: IsolatedStack) -> None:
    reply = client.request("GET", "/symbols", headers=iso.auth(), content=b"x" * 8192)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "BAD_REQUEST"


def _ws_url(iso: IsolatedStack) -> str:
    return iso.base_url.replace("http://", "ws://") + "/ws"


def _first_message(url: str, **kwargs) -> dict:
    with connect(url, open_timeout=15, **kwargs) as ws:
        # A refused socket gets its error unasked and is closed; an accepted one answers a ping.
        with contextlib.suppress(ConnectionClosed):
            ws.send(json.dumps({"op": "ping"}))
        return json.loads(ws.recv(timeout=15))


def test_websocket_needs_the_token(iso: IsolatedStack) -> None:
    refused = _first_message(_ws_url(iso))
    assert (refused["type"], refused["code"]) == ("error", "UNAUTHORIZED")
    wrong = _first_message(_ws_url(iso) + f"?token={iso.token}x")
    assert wrong.get("code") == "UNAUTHORIZED"

    by_query = _first_message(_ws_url(iso) + f"?token={iso.token}")
    by_header = _first_message(_ws_url(iso), additional_headers=iso.auth())
    for reply in (by_query, by_header):
        # Past the token check: a pong, or live data being unavailable (no KIS socket here).
        assert reply.get("code") != "UNAUTHORIZED", reply
        assert reply["type"] == "pong" or reply.get("code") == "UPSTREAM_UNAVAILABLE"


def test_websocket_refuses_a_foreign_origin(iso: IsolatedStack) -> None:
    reply = _first_message(_ws_url(iso) + f"?token={iso.token}", origin="https://evil.example.test")
    assert reply.get("code") == "UNAUTHORIZED"


# The origin policy on a bare app (no Ray): TestClient sends `Host: testserver`, so a page of
# this server carries `Origin: http://testserver`.
SELF = "http://testserver"
DEV = "http://localhost:3000"
STRANGER = "https://evil.example.test"


def _policy_client(monkeypatch: pytest.MonkeyPatch, origins: str) -> Iterator[TestClient]:
    from engine.config import get_settings

    async def hello(request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        # The route is reached: the policy let the socket through.
        await websocket.send_json({"origin": websocket.headers.get("origin")})
        await websocket.close()

    monkeypatch.setenv("KISRAY_CORS_ORIGINS", origins)
    get_settings.cache_clear()
    app = Starlette(routes=[Route("/symbols", hello), WebSocketRoute("/ws", socket)])
    try:
        yield TestClient(OriginPolicy(app))
    finally:
        get_settings.cache_clear()


@pytest.fixture
def unlisted(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    yield from _policy_client(monkeypatch, "")


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    yield from _policy_client(monkeypatch, DEV)


def _socket_reply(client: TestClient, origin: str | None) -> dict:
    headers = {"origin": origin} if origin else {}
    with client.websocket_connect("/ws", headers=headers) as ws:
        reply = ws.receive_json()
        if reply.get("type") == "error":
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1008
        return reply


def test_same_origin_matches_host_and_port_only() -> None:
    assert is_same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert is_same_origin("https://Charts.Example:443", "charts.example:443")  # behind TLS
    assert not is_same_origin("http://127.0.0.1:3000", "127.0.0.1:8000")
    assert not is_same_origin("http://127.0.0.1:8000.evil.test", "127.0.0.1:8000")
    assert not is_same_origin("null", "127.0.0.1:8000")
    assert not is_same_origin("http://127.0.0.1:8000", None)


@pytest.mark.parametrize("fixture", ["unlisted", "listed"])
def test_same_origin_gets_rest_and_the_socket_in_both_configurations(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    client: TestClient = request.getfixturevalue(fixture)
    reply = client.get("/symbols", headers={"Origin": SELF})
    assert reply.status_code == 200 and reply.text == "hello"
    assert _socket_reply(client, SELF) == {"origin": SELF}
    assert _socket_reply(client, None) == {"origin": None}  # not a browser


def test_a_listed_origin_gets_cors_headers_and_the_socket(listed: TestClient) -> None:
    reply = listed.get("/symbols", headers={"Origin": DEV})
    assert reply.headers["access-control-allow-origin"] == DEV
    preflight = listed.options(
        "/symbols", headers={"Origin": DEV, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == DEV
    assert _socket_reply(listed, DEV) == {"origin": DEV}


@pytest.mark.parametrize("fixture", ["unlisted", "listed"])
def test_an_unlisted_origin_gets_neither_and_is_logged_once(
    request: pytest.FixtureRequest, fixture: str, caplog: pytest.LogCaptureFixture
) -> None:
    from api import security

    client: TestClient = request.getfixturevalue(fixture)
    security._refused_logged.discard(STRANGER)
    with caplog.at_level(logging.WARNING, logger="api.security"):
        reply = client.get("/symbols", headers={"Origin": STRANGER})
        assert "access-control-allow-origin" not in reply.headers
        preflight = client.options(
            "/symbols", headers={"Origin": STRANGER, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
        refused = _socket_reply(client, STRANGER)
        assert (refused["type"], refused["code"]) == ("error", "UNAUTHORIZED")
        assert STRANGER in refused["message"]
    warnings = [r.getMessage() for r in caplog.records if STRANGER in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "KISRAY_CORS_ORIGINS" in warnings[0]


def test_isolated_stack_serves_its_own_origin_on_rest_and_socket(iso: IsolatedStack) -> None:
    """Through Serve's proxy with an allowlist set: the server's own origin (how /demo and /docs
    are loaded) is allowed on REST and /ws although it is not listed."""
    own = iso.base_url.removesuffix("/iso")
    rest = httpx.get(f"{iso.base_url}/symbols", headers=iso.auth() | {"Origin": own}, timeout=30)
    assert rest.status_code == 200
    reply = _first_message(_ws_url(iso) + f"?token={iso.token}", origin=own)
    assert reply.get("code") != "UNAUTHORIZED", reply
    listed = _first_message(_ws_url(iso) + f"?token={iso.token}", origin=CORS_ORIGIN)
    assert listed.get("code") != "UNAUTHORIZED", listed
