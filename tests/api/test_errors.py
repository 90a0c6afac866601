"""The error envelope, request ids and the log file, on an in-process FastAPI app that uses the
real handlers and middleware (a route that fails on purpose cannot be part of the product)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.errors import install_error_handlers
from api.middleware import install_middleware
from engine.errors import NoDataFoundError
from engine.logs import configure_logging


class _Boom(RuntimeError):
    pass


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_middleware(app)

    @app.get("/boom/{symbol}")
    async def boom(symbol: str) -> dict:
        logging.getLogger("tests.boom").info("about to fail for %s", symbol)
        raise _Boom(f"forced failure for {symbol}")

    @app.get("/missing")
    async def missing() -> dict:
        raise NoDataFoundError("nothing here")

    @app.get("/db")
    async def db() -> dict:
        raise ConnectionRefusedError(111, "Connect call failed")

    @app.get("/ok")
    async def ok() -> dict:
        return {"ok": True}

    return app


@pytest.fixture
def log_file(tmp_path: Path):
    path = tmp_path / "kisray.log"
    configure_logging(path, "INFO", console=False)
    yield path
    for handler in logging.getLogger().handlers:
        handler.flush()


def _client(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: Starlette re-raises after answering 500, as servers expect.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_forced_internal_error_is_500_with_the_trace_under_the_request_id(
    log_file: Path,
) -> None:
    async with _client(_app()) as client:
        reply = await client.get("/boom/005930", headers={"X-Request-ID": "rid-boom-1"})
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["code"] == "INTERNAL_ERROR"
    assert error["request_id"] == "rid-boom-1"
    assert reply.headers["x-request-id"] == "rid-boom-1"
    assert "forced failure" not in reply.text  # internals stay in the log

    text = await asyncio.to_thread(log_file.read_text)
    assert "Traceback (most recent call last)" in text
    assert "_Boom: forced failure for 005930" in text
    failed = [line for line in text.splitlines() if "failed" in line and "rid-boom-1" in line]
    assert failed and "/boom/{symbol}" in failed[0]  # the route template
    # A line logged by the route before it failed carries the id through the contextvar.
    assert any(
        "request_id=rid-boom-1" in line and "about to fail" in line for line in text.splitlines()
    )


async def test_request_id_is_generated_when_absent_and_echoed_when_sent() -> None:
    async with _client(_app()) as client:
        fresh = await client.get("/missing")
        sent = await client.get("/ok", headers={"X-Request-ID": "client-chose-this"})
    assert fresh.status_code == 404
    assert fresh.json()["error"]["code"] == "NO_DATA_FOUND"
    generated = fresh.headers["x-request-id"]
    assert len(generated) >= 16 and fresh.json()["error"]["request_id"] == generated
    assert sent.headers["x-request-id"] == "client-chose-this"  # once, not a list


async def test_an_os_error_in_a_route_is_not_mistaken_for_the_database(log_file: Path) -> None:
    async with _client(_app()) as client:
        reply = await client.get("/db", headers={"X-Request-ID": "rid-db-1"})
    # Raised in the route itself (not through an actor), so it is unexpected: 500.
    assert reply.status_code == 500
    assert reply.json()["error"]["code"] == "INTERNAL_ERROR"


async def test_request_body_over_the_limit_is_refused() -> None:
    async with _client(_app()) as client:
        reply = await client.request("GET", "/ok", content=b"x" * (1024 * 1024))
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "BAD_REQUEST"
