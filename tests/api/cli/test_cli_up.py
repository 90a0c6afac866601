"""`kisray up` as a user runs it: a subprocess, its health, a second instance, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import websockets
from websockets.sync.client import connect as ws_connect

from engine.config import DEFAULT_SYMBOLS
from tests.api.browser_support import CHROMIUM
from tests.api.chart_support import drive_charts
from tests.conftest import free_port

pytestmark = pytest.mark.slow

KISRAY = str(Path(sys.executable).with_name("kisray"))


def _env(home: Path, port: int, sim_port: int) -> dict[str, str]:
    """A newcomer's environment: an empty HOME (no ~/.ray, no caches) and a fresh data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KISRAY_", "RAY_"))}
    (home / "home").mkdir(exist_ok=True)
    env.update(
        HOME=str(home / "home"),
        KISRAY_DATA_DIR=str(home / "data"),
        KISRAY_LOG_DIR=str(home / "logs"),
        KISRAY_PORT=str(port),
        KISRAY_SIM_PORT=str(sim_port),
    )
    return env


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert proc.poll() is None, f"kisray up exited early with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not healthy within {timeout} s")


def _wait_for_candles(url: str, timeout: float = 60, enough: int = 1) -> list[dict]:
    """The candles at `url` once there are `enough` (demo history is seeded in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TimeoutException):  # a slow machine's first request
            reply = httpx.get(url, timeout=10)
            if reply.status_code == 200 and len(reply.json()["candles"]) >= enough:
                return reply.json()["candles"]
        time.sleep(1)
    raise AssertionError(f"no candles at {url} within {timeout:.0f} s")


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            pass
    return alive


def _postgres_on(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any("postgres" in part for part in cmdline[:1]) and str(pgdata) in cmdline:
            found.append(proc)
    return found


def _wait_for_banner(log: Path, timeout: float = 60) -> None:
    """/health answers while the collector side is still starting; a signal then is an
    interrupted start-up (exit 130). The banner ends start-up."""
    deadline = time.monotonic() + timeout
    while "kisray is up" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)


@contextlib.contextmanager
def _kisray_up(
    home: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen, dict[str, str], int, int]]:
    """`kisray up` in a subprocess, healthy; killed at the end if a test left it running."""
    port, sim_port = free_port(), free_port()
    env = _env(home, port, sim_port) | (extra_env or {})
    with open(home / "up.log", "wb") as log:
        proc = subprocess.Popen([KISRAY, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=90)
            yield proc, env, port, sim_port
        finally:
            if proc.poll() is None:
                proc.kill()


async def _first_trade_delays(url: str, tabs: int) -> list[float]:
    """Seconds until each of `tabs` sockets, opened together, gets its first trade of any demo
    symbol; an error message or a close fails. One symbol alone can pause for seconds between
    trade bursts (measured: 2.2 s once), which would time the market instead of the stack."""
    channels = [f"trade:{symbol}" for symbol in DEFAULT_SYMBOLS]

    async def one() -> float:
        started = time.monotonic()
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"op": "subscribe", "channels": channels}))
            async with asyncio.timeout(10):
                while True:
                    message = json.loads(await ws.recv())
                    assert message["type"] != "error", message
                    if message["type"] == "trade":
                        return time.monotonic() - started

    return list(await asyncio.gather(*(one() for _ in range(tabs))))


def test_up_serves_health_and_seeded_candles_refuses_a_second_instance_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    # One session actor per client, the design card's layout; the rest of the suite runs the
    # default (several sessions per actor).
    with _kisray_up(tmp_path, {"KISRAY_SESSIONS_PER_ACTOR": "1"}) as (proc, env, port, sim_port):
        # Ready means ready: tabs that connect the moment /health first says ok get data at once.
        delays = asyncio.run(_first_trade_delays(f"ws://127.0.0.1:{port}/ws", 3))
        assert max(delays) <= 2.0, delays
        # The banner follows the same /health; a SIGTERM before it is an interrupted start-up
        # (exit 130).
        _wait_for_banner(tmp_path / "up.log")
        started = _descendants(proc.pid) + _postgres_on(tmp_path / "data" / "pg")
        assert _postgres_on(tmp_path / "data" / "pg"), "embedded postgres should be running"
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
        assert health["kis"]["rest_url"] == f"http://127.0.0.1:{sim_port}"
        assert _wait_for_candles(f"http://127.0.0.1:{port}/candles/005930?interval=5m")
        # Demo history is seeded from the simulator through the backfill path (3 days by
        # default), in the background, and the recorder runs.
        assert "recorder" in health
        days = _wait_for_candles(
            f"http://127.0.0.1:{port}/candles/000660?interval=1d&fill=false", enough=2
        )
        assert len(days) >= 2, days
        minutes = httpx.get(
            f"http://127.0.0.1:{port}/candles/005930?interval=1m&limit=200", timeout=10
        ).json()
        assert len(minutes["candles"]) == 200
        # The private head's token lives in the data dir; nothing was read from or left in HOME.
        assert list((tmp_path / "home").iterdir()) == []
        assert (tmp_path / "data" / "ray_auth_token").stat().st_mode & 0o077 == 0
        sim_stats = httpx.get(f"http://127.0.0.1:{sim_port}/_sim/stats", timeout=5)
        assert sim_stats.status_code == 200, "the built-in simulator should be the upstream"

        # The demo's chart at 1m, 5m and 1d: history, then a minute of live updates, no errors.
        if Path(CHROMIUM).exists():
            charts = asyncio.run(
                drive_charts(f"http://127.0.0.1:{port}", "005930", ["1m", "5m", "1d"], 60)
            )
            assert charts["problems"] == []
            assert all(n > 10 for n in charts["updates"].values()), charts["updates"]
            assert all(charts["equal"].values()), charts["equal"]  # REST and /ws forming bars

        status = subprocess.run([KISRAY, "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0, status.stderr
        assert "mode postgres" in status.stderr + status.stdout
        token = tmp_path / "data" / "ray_auth_token"
        assert f"RAY_AUTH_TOKEN_PATH={token}" in status.stdout + status.stderr

        second = subprocess.run([KISRAY, "up"], env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert "already running" in second.stderr
        assert "Traceback" not in second.stderr

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode == 0
        deadline = time.monotonic() + 15
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _alive(started) == []
        assert _postgres_on(tmp_path / "data" / "pg") == []
        after = subprocess.run([KISRAY, "status"], env=env, capture_output=True, text=True)
        assert after.returncode == 1 and "not running" in after.stderr


@contextlib.contextmanager
def _clients(port: int) -> Iterator[None]:
    """Two subscribed WebSocket clients and a keep-alive HTTP client: connections the server
    side closes first when it goes, which is what left KISRAY_PORT in TIME_WAIT (issue 15)."""
    with contextlib.ExitStack() as stack:
        for _ in range(2):
            # close_timeout: at the end the server may be gone, with no close frame to wait for.
            url = f"ws://127.0.0.1:{port}/ws"
            ws = stack.enter_context(ws_connect(url, proxy=None, close_timeout=2))
            ws.send(json.dumps({"op": "subscribe", "channels": ["trade:005930"]}))
            kinds: list[str] = []  # session, perhaps status, then subscribed
            while "subscribed" not in kinds:
                assert len(kinds) < 10, kinds
                kinds.append(json.loads(ws.recv(timeout=10))["type"])
        http = stack.enter_context(httpx.Client(timeout=30))
        for path in ("/health", "/symbols", "/candles/005930?interval=1m&limit=10"):
            http.get(f"http://127.0.0.1:{port}{path}")
        yield
