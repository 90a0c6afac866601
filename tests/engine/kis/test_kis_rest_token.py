"""The REST client replaces an access token the server no longer accepts, against the simulator:
one warning, one new token (no sooner than KIS's one a minute), one retry, never a loop."""

from __future__ import annotations

import json
import logging
import stat
import time
from pathlib import Path

import httpx
import pytest

from engine.errors import UpstreamUnavailableError
from engine.kis.rest import KisRestClient

SYMBOL = "005930"
REST_LOGGER = "engine.kis.rest"


def client(sim, cache: Path, **options: object) -> KisRestClient:  # type: ignore[no-untyped-def]
    return KisRestClient(sim.rest_url, "app-key", "secret", token_cache=cache, **options)  # type: ignore[arg-type]


async def fault(sim, kind: str) -> int:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=sim.rest_url) as http:
        reply = await http.post("/_sim/fault", json={"kind": kind})
        reply.raise_for_status()
        return reply.json()["affected"]


def cached(cache: Path) -> dict:
    (entry,) = json.loads(cache.read_text()).values()
    return entry


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == REST_LOGGER and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("kind", "code", "word"),
    [("expire_tokens", "EGW00123", "expired"), ("forget_tokens", "EGW00121", "invalid")],
)
async def test_a_refused_token_is_replaced_and_the_call_retried_once(
    sim_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, code: str, word: str
) -> None:
    cache = tmp_path / "kis-token.json"
    async with (
        sim_factory(token_interval_s=0.2) as sim,
        client(sim, cache, token_interval_s=0.2) as kis,
    ):
        assert (await kis.today_minutes(SYMBOL, "100000")).rows
        first = await kis.token()
        assert await fault(sim, kind) == 1
        with caplog.at_level(logging.INFO, logger=REST_LOGGER):
            page = await kis.today_minutes(SYMBOL, "100000")
        assert page.rows
        assert kis.calls == 3  # the first call, the refused one, the retry
        assert sim.state.stats.tokens_issued == 2
        second = await kis.token()
        assert second != first
    (line,) = warnings(caplog)
    assert code in line.getMessage() and word in line.getMessage()
    assert line.exc_info is None
    assert first not in caplog.text and second not in caplog.text
    # The file holds the new token (0600), so the next process starts with a good one.
    assert cached(cache)["token"] == second
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


async def test_a_token_cached_before_a_simulator_restart_is_replaced(
    sim_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The `kisray up` restart: the data dir's token belongs to the previous server."""
    cache = tmp_path / "kis-token.json"
    async with sim_factory() as old, client(old, cache) as kis:
        await kis.today_minutes(SYMBOL, "100000")
        port, stale = old.port, await kis.token()
    # A short minute: the wait itself is the next test's subject.
    async with sim_factory(port=port) as sim, client(sim, cache, token_interval_s=0.2) as kis:
        with caplog.at_level(logging.INFO, logger=REST_LOGGER):
            assert (await kis.today_minutes(SYMBOL, "100000")).rows
        assert kis.calls == 2 and sim.state.stats.tokens_issued == 1
        fresh = await kis.token()
    assert fresh != stale and cached(cache)["token"] == fresh
    (line,) = warnings(caplog)
    assert "EGW00121" in line.getMessage() and line.exc_info is None


async def test_a_new_token_waits_out_the_one_a_minute_rule_once(
    sim_factory, tmp_path: Path
) -> None:
    interval = 1.5
    async with (
        sim_factory(token_interval_s=interval) as sim,
        client(sim, tmp_path / "kis-token.json", token_interval_s=interval) as kis,
    ):
        await kis.today_minutes(SYMBOL, "100000")
        issued = time.monotonic()
        await fault(sim, "forget_tokens")
        assert (await kis.today_minutes(SYMBOL, "100000")).rows
        # The server would have answered EGW00133 any sooner, and the call would have failed.
        assert time.monotonic() - issued >= interval - 0.1
        assert sim.state.stats.tokens_issued == 2 and kis.calls == 3


async def test_the_simulator_refuses_a_second_token_within_its_minute(
    sim_factory, tmp_path: Path
) -> None:
    """A client that did not wait gets KIS's EGW00133 as a typed error, and stops there."""
    async with (
        sim_factory(token_interval_s=30) as sim,
        client(sim, tmp_path / "kis-token.json", token_interval_s=0) as kis,
    ):
        await kis.today_minutes(SYMBOL, "100000")
        await fault(sim, "forget_tokens")
        with pytest.raises(UpstreamUnavailableError, match="EGW00133"):
            await kis.today_minutes(SYMBOL, "100000")
        assert kis.calls == 2 and sim.state.stats.tokens_issued == 1


async def test_a_new_token_refused_too_is_a_typed_error_without_a_loop(
    sim_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every token is past its lifetime the moment it is issued.
    async with (
        sim_factory(token_interval_s=0, token_lifetime_s=0) as sim,
        client(sim, tmp_path / "kis-token.json", token_interval_s=0) as kis,
    ):
        with (
            caplog.at_level(logging.INFO, logger=REST_LOGGER),
            pytest.raises(UpstreamUnavailableError, match="EGW00123") as caught,
        ):
            await kis.today_minutes(SYMBOL, "100000")
        assert kis.calls == 2 and sim.state.stats.tokens_issued == 2
    assert caught.value.code == "UPSTREAM_UNAVAILABLE"
    assert len(warnings(caplog)) == 1
