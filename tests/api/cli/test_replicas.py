"""`kisray up` with KISRAY_REPLICAS=2: two replicas behind haproxy on the one KISRAY_PORT."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import time
from pathlib import Path

import httpx
import psutil
import pytest
import websockets

from engine.config import DEFAULT_SYMBOLS
from tests.api.cli.test_cli_up import _descendants, _kisray_up
from tests.conftest import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("haproxy", path="/usr/sbin:/usr/bin:/usr/local/sbin") is None,
        reason="no haproxy (make haproxy installs Debian's when root)",
    ),
]

TRADES = [f"trade:{symbol}" for symbol in DEFAULT_SYMBOLS]
TABS = 8
RESUME_BOUND_S = 2.0  # from the kill to the first trade on the other replica


def _replica_of_each_request(port: int, requests: int) -> dict[str, int]:
    """/ws/stats names the replica that answered; fresh connections each time."""
    seen: dict[str, int] = {}
    for _ in range(requests):
        stats = httpx.get(f"http://127.0.0.1:{port}/ws/stats", timeout=5).json()
        seen[stats["replica"]] = stats["sockets"]
    return seen


class Tab:
    """A chart tab that checks every trade follows the previous one of its symbol (a trade's
    cum_volume - volume is the previous trade's cum_volume), across a resume too."""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.session: str | None = None
        self.ws: websockets.ClientConnection | None = None
        self.last: dict[str, int] = {}  # symbol → cum_volume of the last trade received
        self.holes: list[tuple[str, int, int]] = []  # symbol, last seen, next received
        self.gaps: list[dict] = []

    def _take(self, message: dict) -> None:
        if message["type"] == "gap":
            self.gaps.append(message)
        if message["type"] != "trade":
            return
        symbol = message["symbol"]
        for trade in message["data"]:
            before = self.last.get(symbol)
            if before is not None and trade["cum_volume"] - trade["volume"] != before:
                self.holes.append((symbol, before, trade["cum_volume"]))
            self.last[symbol] = trade["cum_volume"]

    async def open(self, resume: bool = False) -> float:
        """Connect (resuming the session if asked); seconds until the first trade."""
        started = time.monotonic()
        url = self.url
        if resume:
            last = ",".join(f"{symbol}:{cum}" for symbol, cum in self.last.items())
            url = f"{self.url}?resume={self.session}&last={last}"
        self.ws = await websockets.connect(url, close_timeout=1)
        if not resume:
            await self.ws.send(json.dumps({"op": "subscribe", "channels": TRADES}))
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await self.ws.recv())
                assert message["type"] != "error", message
                self._take(message)
                if message["type"] == "session":
                    assert not resume or message["id"] == self.session, message
                    self.session = message["id"]
                if message["type"] == "subscribed" and resume:
                    assert sorted(message["channels"]) == sorted(TRADES), message
                if message["type"] == "trade":
                    return time.monotonic() - started

    async def read_until_closed(self, wait_s: float = 10) -> bool:
        """Take messages until the server side goes (True) or `wait_s` passes (False)."""
        assert self.ws is not None
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    self._take(json.loads(await self.ws.recv()))
        except websockets.ConnectionClosed:
            return True
        except TimeoutError:
            return False


def _free_range(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    while True:
        first = free_port()
        if all(_is_free(p) for p in range(first, first + count)):
            return first


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _replica_processes(kisray_pid: int) -> list[psutil.Process]:
    return [
        p
        for p in _descendants(kisray_pid)
        if "ServeReplica:kisray:KisrayIngress" in " ".join(p.cmdline())
    ]


def test_two_replicas_share_the_url_and_a_killed_replicas_tabs_resume_on_the_other(
    tmp_path: Path,
) -> None:
    replicas = {"KISRAY_REPLICAS": "2", "KISRAY_REPLICA_PORT": str(_free_range(3))}
    with _kisray_up(tmp_path, replicas) as (proc, _env, port, _sim_port):
        assert len(_replica_processes(proc.pid)) == 2
        # New connections go to the replica with fewer: both answer on the one port.
        assert len(_replica_of_each_request(port, 6)) == 2

        async def scenario() -> tuple[list[float], list[float], dict[str, int]]:
            tabs = [Tab(port) for _ in range(TABS)]
            firsts = [await tab.open() for tab in tabs]  # one by one: leastconn alternates
            spread = _replica_of_each_request(port, 6)
            victim = _replica_processes(proc.pid)[0]

            async def ride_out(tab: Tab) -> float | None:
                """Seconds from the kill to the first trade after resuming; None: not cut."""
                if not await tab.read_until_closed(3.0):
                    return None
                # At once, through the same URL: haproxy must not send it to the dead
                # replica, and the session must come back with its channels.
                await tab.open(resume=True)
                since_kill = time.monotonic() - killed_at
                await tab.read_until_closed(2.0)  # and the stream goes on
                return since_kill

            killed_at = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            rides = await asyncio.gather(*(ride_out(tab) for tab in tabs))
            resumed = [r for r in rides if r is not None]
            assert 0 < len(resumed) < TABS, f"tabs cut: {len(resumed)} of {TABS}, spread {spread}"
            for tab in tabs:
                assert tab.ws is not None
                await tab.ws.close()
            # Nothing missed, before, across or after the resume: the replica it resumed on
            # streams the same symbols, so it still held the trades the tab had not received.
            assert [tab.holes for tab in tabs] == [[]] * TABS
            assert [tab.gaps for tab in tabs] == [[]] * TABS
            return firsts, resumed, spread

        firsts, resumed, spread = asyncio.run(scenario())
        print(f"first trade {firsts}; resumed {resumed}; spread {spread}")
        assert sorted(spread.values()) == [TABS // 2, TABS // 2], spread
        assert max(firsts) < 5, firsts
        assert max(resumed) < RESUME_BOUND_S, resumed
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status_code in (200, 503)  # answered through haproxy either way
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not [
            p
            for p in psutil.process_iter(["name"])
            if p.info["name"] == "haproxy" and str(tmp_path) in " ".join(p.cmdline())
        ]
