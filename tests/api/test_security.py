"""Token auth on REST and WebSocket, CORS and the body limit, on the isolated app (token set)."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api.security import bearer_token, token_matches
from engine.config import load_settings
from tests.api.isolated_stack import CORS_ORIGIN, SYMBOL, IsolatedStack, isolated_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def iso(
    serve_url: str,  # deployed first, so it holds the first direct-ingress port
    serve_proxy_url: str,
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> IsolatedStack:
    return isolated_stack(serve_proxy_url, pytestconfig, tmp_path_factory)


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
