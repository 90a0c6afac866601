"""Live fan-out: WS /ws (session actors + per-replica hub, through Ray Serve) against a plain
single-process FastAPI broadcast, both fed by the KIS simulator at 2,000 trades/s over 20 symbols.

  (a) 50 clients subscribed to everything (trade, book, candle of all 20 symbols)
  (b) 30 clients × 3 of the 20 symbols
  (c) load (a) against the baseline: one uvicorn process, its own KIS connection, 20 ms windows

Latency is upstream frame → client receive: a tap (its own KIS connection with another app key,
in the client process) notes when each trade (symbol, cumulative volume) arrived from the
simulator; each client matches the oldest trade of every trade message it receives.
Delivered/expected counts every trade: a message's trades are consecutive, so from its first
one it covers an exact stretch of the tap's sequence. Clients run
in a separate process from the servers. Server CPU is psutil over the server processes (Ray's, or
the baseline's); memory per client is the growth of their unique memory (USS) from before the
session pool was warmed to with all clients connected, divided by the clients.

Run: .venv/bin/python bench/bench_fanout.py   (about 3 minutes; the machine is shared, so CPU
figures are noisy)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.config import Settings  # noqa: E402  (after the path insert)

SYMBOLS = tuple(f"{n:06d}" for n in range(100, 120))
RATE = 2000.0  # trades per real second over all symbols
SPEED = 50.0  # simulated seconds per real second: small frames, often (a smooth feed)
ALL_CHANNELS = [f"{k}:{s}" for s in SYMBOLS for k in ("trade", "book")] + [
    f"candle:{s}:1m" for s in SYMBOLS
]
PY = sys.executable
SHIPPED = "direct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


# -- the simulator (a child process) ------------------------------------------------------------


def run_sim(port: int) -> None:
    from datetime import datetime

    from engine.sim.server import SimulatorConfig, run_simulator

    run_simulator(
        SimulatorConfig(
            port=port,
            symbols=SYMBOLS,
            rate=RATE / SPEED,
            speed=SPEED,
            start=datetime(2025, 3, 12, 9, 1, 0),
            tick_interval_s=0.01,
            notice_interval_s=0,
            max_batch=50,
            trade_frames="packed",  # few big frames keep the simulator's own cost down
        )
    )


# -- the baseline: a plain single-process FastAPI broadcast -----------------------------------


def run_baseline(port: int, sim_port: int) -> None:
    """One process: its own KIS connection, 20 ms windows, rendered once, sent to every socket."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from engine.kis.connection import ConnectionConfig
    from engine.kis.feed import KisFeed
    from engine.live.channels import WindowCoalescer, encode, parse_channels

    clients: dict[WebSocket, frozenset] = {}
    tasks: list[asyncio.Task[None]] = []

    async def pump() -> None:
        url = f"127.0.0.1:{sim_port}"
        feed = KisFeed(ConnectionConfig(f"ws://{url}", f"http://{url}", "baseline", "s"))
        feed.start()
        feed.register("all")
        everything = frozenset(parse_channels(ALL_CHANNELS))
        await feed.subscribe("all", sorted({c.registration for c in everything}))
        window = WindowCoalescer()
        while True:
            started = time.monotonic()
            batch = await feed.next_batch("all", 1.0)
            if batch is not None:
                window.add(batch.records)
                messages = window.drain(everything)
                for ws, wanted in list(clients.items()):
                    texts = [text for channel, text in messages.items() if channel in wanted]
                    if texts:  # the same framing as /ws?batch=1: one array per window
                        with contextlib.suppress(Exception):
                            await ws.send_text("[" + ",".join(texts) + "]")
            await asyncio.sleep(max(0.0, 0.02 - (time.monotonic() - started)))

    async def live(ws: WebSocket) -> None:
        if not tasks:
            tasks.append(asyncio.create_task(pump()))
        await ws.accept()
        try:
            while True:
                message = json.loads(await ws.receive_text())
                if message.get("op") == "subscribe":
                    clients[ws] = frozenset(parse_channels(message["channels"]))
                    reply = {"type": "subscribed", "channels": message["channels"]}
                    await ws.send_text(encode(reply))
        except WebSocketDisconnect:
            pass
        finally:
            clients.pop(ws, None)

    app = Starlette(routes=[WebSocketRoute("/ws", live)])
    # The same transport as /ws: no permessage-deflate (KISRAY_WS_COMPRESSION's default).
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False)


# -- the load generator (a child process) -------------------------------------------------------


class Tap:
    """The simulator's trades as they arrived on a KIS connection of the tap's own: per symbol,
    (cumulative volume, arrival time) in arrival order, and where each sits in that order."""

    def __init__(self, sim_port: int, key: str = "bench-tap") -> None:
        self.sim_port = sim_port
        self.key = key  # the app key: one KIS connection per key
        self.order: dict[str, list[tuple[int, float]]] = {s: [] for s in SYMBOLS}
        self.position: dict[tuple[str, int], int] = {}
        self.feed = None

    async def start(self) -> None:
        from engine.kis import tr
        from engine.kis.connection import ConnectionConfig
        from engine.kis.feed import KisFeed
        from engine.kis.registry import Registration

        url = f"127.0.0.1:{self.sim_port}"
        self.feed = KisFeed(ConnectionConfig(f"ws://{url}", f"http://{url}", self.key, "s"))
        self.feed.start()
        self.feed.register("tap")
        await self.feed.subscribe("tap", [Registration(tr.TRADE, s) for s in SYMBOLS])
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.feed.next_batch("tap", 1.0)
            now = time.time()
            if batch is not None:
                for t in batch.records:
                    seq = self.order[t.symbol]
                    self.position[(t.symbol, t.cum_volume)] = len(seq)
                    seq.append((t.cum_volume, now))

    def arrived(self, symbol: str, position: int) -> float:
        return self.order[symbol][position][1]

    def match(self, messages, t0: float, t1: float) -> tuple[dict[str, set[int]], list, int]:
        """One client's trade messages, as (symbol, first cum_volume, trades, received at):
        the tap positions they cover per symbol, (arrival, receipt) of the first trade of each
        message that arrived in [t0, t1), and how many matched no trade the tap saw.

        A message carries consecutive trades of one symbol from its first one on, so it covers
        an exact stretch of the tap's sequence: delivery is counted per trade, not credited as
        a whole to its first trade's arrival (which miscounted messages straddling an edge)."""
        covered: dict[str, set[int]] = {}
        timed: list[tuple[float, float]] = []
        unmatched = 0
        for symbol, first, n, recv in messages:
            pos = self.position.get((symbol, first))
            if pos is None:
                unmatched += 1
                continue
            covered.setdefault(symbol, set()).update(range(pos, pos + n))
            at = self.arrived(symbol, pos)
            if t0 <= at < t1:
                timed.append((at, recv))
        return covered, timed, unmatched

    def window(self, symbol: str, t0: float, t1: float) -> range:
        """Positions of the trades of `symbol` that reached the tap in [t0, t1)."""
        seq = self.order[symbol]
        first = next((i for i, (_, at) in enumerate(seq) if at >= t0), len(seq))
        last = next((i for i in range(len(seq) - 1, -1, -1) if seq[i][1] < t1), -1)
        return range(first, last + 1)


def stalled_client(url: str, channels: list[str], stop: threading.Event) -> str:
    """A tab that subscribes and then reads nothing, on a plain socket with a 64 KB receive
    buffer (a client library would read into its own queue, and loopback lets the kernel hold
    ~36 MB, a minute of this feed). Returns how it ended, seen from its side."""
    host, rest = url.split("//")[1].split("/", 1)
    name, port = host.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect((name, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: leave the frames in the kernel
    assert b" 101 " in head.split(b"\r\n")[0], head
    payload = json.dumps({"op": "subscribe", "channels": channels}).encode()
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask
    sock.sendall(frame + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    stop.wait()
    sock.settimeout(10)
    tail = b""
    try:
        while chunk := sock.recv(1 << 20):
            tail = (tail + chunk)[-4096:]
            if b"SLOW_CONSUMER" in tail:
                return "SLOW_CONSUMER"
        return "closed by the server"
    except TimeoutError:
        return "still open"
    except OSError as exc:
        return f"closed by the server ({exc.strerror})"
    finally:
        sock.close()


class Client:
    def __init__(self, url: str, channels: list[str]) -> None:
        self.url = url
        self.channels = channels
        self.samples: list[tuple[str, int, float, int]] = []  # symbol, first cum, recv, n
        self.first_at: float | None = None
        self.marks: dict[str, float] = {}  # connected / session / subscribed → time
        self.got_first = asyncio.Event()
        self.closed_with: str | None = None
        self.symbols = {c.split(":")[1] for c in channels}

    async def run(self, stop: asyncio.Event) -> None:
        import websockets

        async with websockets.connect(self.url, max_size=None, ping_interval=None) as ws:
            self.marks["connected"] = time.time()
            await ws.send(json.dumps({"op": "subscribe", "channels": self.channels}))
            while not stop.is_set():
                try:
                    async with asyncio.timeout(0.5):
                        text = await ws.recv()
                except TimeoutError:
                    continue
                except Exception as exc:
                    self.closed_with = type(exc).__name__
                    return
                now = time.time()
                for mark in ("session", "subscribed"):
                    if mark not in self.marks and f'"type":"{mark}"' in text:
                        self.marks[mark] = now
                # Frames are JSON arrays of messages (?batch=1); scan, don't parse: the client
                # process must not be the bottleneck.
                for part in text.split('{"type":"trade","symbol":"')[1:]:
                    if self.first_at is None:
                        self.first_at = now
                        self.got_first.set()
                    i = part.find('"cum_volume":') + 13
                    first = int(part[i : part.find("}", i)])
                    self.samples.append((part[:6], first, now, part.count('"price"')))
                if '"SLOW_CONSUMER"' in text:
                    self.closed_with = "SLOW_CONSUMER"
                    return


async def load(args: argparse.Namespace) -> dict:
    tap = Tap(args.sim_port)
    await tap.start()
    await asyncio.sleep(1.0)
    per = json.loads(args.channels)  # one list of channels per client
    clients = [Client(args.url, chans) for chans in per]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in clients]
    stall_stop = threading.Event()
    stall = None
    if args.stall:
        stall = asyncio.create_task(
            asyncio.to_thread(stalled_client, args.url, ALL_CHANNELS, stall_stop)
        )
    await asyncio.sleep(args.warmup)
    print("READY", flush=True)  # the orchestrator samples server CPU and memory from here
    t0 = time.time()
    watch = StatsWatch(args.url)
    watcher = asyncio.create_task(watch.run())
    await asyncio.sleep(args.duration)
    t1 = time.time()
    # New tabs while the load runs: connect → first trade message.
    new_tab = []
    phases: dict[str, list[float]] = {}
    for _ in range(args.new_tabs):
        tab = Client(args.url, per[0])
        one = asyncio.Event()
        started = time.time()
        task = asyncio.create_task(tab.run(one))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tab.got_first.wait(), 10)
        one.set()
        with contextlib.suppress(Exception):  # a tab that never got in counts as slow
            await task
        new_tab.append(((tab.first_at or time.time()) - started) * 1000)
        for mark, at in tab.marks.items():
            phases.setdefault(mark, []).append((at - started) * 1000)
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.0)  # stragglers of the measured interval
    watcher.cancel()
    stop.set()
    stall_stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies, delivered, expected, unmatched = [], 0, 0, 0
    # The others' latency while the non-reader was still connected, and after it was cut.
    cut_at = watch.cut_at or float("inf")
    before_cut, after_cut = [], []
    windows = {s: tap.window(s, t0, t1) for s in SYMBOLS}
    for c in clients:
        messages = ((s, first, n, recv) for s, first, recv, n in c.samples)
        covered, timed, missed = tap.match(messages, t0, t1)
        unmatched += missed
        for at, recv in timed:
            latencies.append((recv - at) * 1000)
            (before_cut if recv < cut_at else after_cut).append(latencies[-1])
        for symbol in c.symbols:
            expected += len(windows[symbol])
            delivered += len(covered.get(symbol, set()).intersection(windows[symbol]))
    latencies.sort()

    def pct(p: float, values: list[float] | None = None) -> float:
        values = latencies if values is None else sorted(values)
        return values[min(len(values) - 1, int(p * len(values)))] if values else -1

    return {
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] if latencies else -1,
        "delivered": delivered,
        "expected": expected,
        "ratio": delivered / expected if expected else 0.0,
        "messages": len(latencies),
        "unmatched": unmatched,
        "new_tab_ms": statistics.median(new_tab) if new_tab else -1,
        "new_tab_max_ms": max(new_tab) if new_tab else -1,
        "new_tab_phases": {k: round(statistics.median(v), 1) for k, v in phases.items()},
        "closed": [c.closed_with for c in clients if c.closed_with],
        "stall_closed_with": (await stall) if stall else None,
        "duration_s": t1 - t0,
        "stall_cut_after_s": (watch.cut_at - t0 + args.warmup) if watch.cut_at else None,
        "p99_before_cut_ms": pct(0.99, before_cut),
        "p99_after_cut_ms": pct(0.99, after_cut),
        "outbox_high_water": watch.high_water,
        "outbox_limit": watch.limit,
        "outbox_series": watch.series[::5],
        "hub_ms": {k: round(statistics.median(v), 1) for k, v in watch.timing.items()},
    }


class StatsWatch:
    """Polls the replica's /ws/stats: the fullest outbox and when a client was cut."""

    def __init__(self, ws_url: str) -> None:
        self.url = ws_url.replace("ws://", "http://").split("/ws")[0] + "/ws/stats"
        self.high_water = 0
        self.limit = 0
        self.cut_at: float | None = None
        self.series: list[tuple[int, int]] = []  # (time, fullest outbox now)
        self.timing: dict[str, list[float]] = {}  # the hub's window, pull, render, loop lag

    async def run(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    stats = (await client.get(self.url)).json()
                    self.high_water = max(self.high_water, stats.get("outbox_high_water", 0))
                    self.series.append((round(time.time()), stats.get("outbox_max_bytes", 0)))
                    for key in ("window_ms", "pull_ms", "deliver_ms", "lag_ms"):
                        if key in stats:
                            self.timing.setdefault(key, []).append(stats[key])
                    self.limit = stats.get("outbox_limit", 0)
                    if stats.get("slow_consumers") and self.cut_at is None:
                        self.cut_at = time.time()
                await asyncio.sleep(0.5)


# -- orchestration --------------------------------------------------------------------------------


def server_processes(pids: set[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out.append(psutil.Process(pid))
    return out


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def kind_of(p: psutil.Process) -> str:
    """`ray::SessionActor`, `raylet`, `python` (the simulator, the driver), …"""
    name = p.name() if not p.cmdline() else p.cmdline()[0].split()[0]
    return name.rsplit("/", 1)[-1].split(".")[0][:32]


def uss_by_kind(procs: list[psutil.Process]) -> dict[str, float]:
    """Unique memory (MB) per kind of process."""
    out: dict[str, float] = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            kind = kind_of(p)
            out[kind] = out.get(kind, 0.0) + p.memory_full_info().uss / 2**20
    return out


def cpu_by_kind(procs: list[psutil.Process]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            kind = kind_of(p)
            out[kind] = out.get(kind, 0.0) + t.user + t.system
    return out


def uss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().uss  # unique: shared libraries are not counted 50×
    return total / 2**20


def run_load(
    url: str,
    sim_port: int,
    per_client: list[list[str]],
    pids,
    *,
    stall=False,
    new_tabs=0,
    duration=12,
) -> dict:
    cmd = [PY, __file__, "--load", "--url", url, "--sim-port", str(sim_port)]
    cmd += ["--channels", json.dumps(per_client), "--duration", str(duration), "--warmup", "4"]
    cmd += ["--new-tabs", str(new_tabs)] + (["--stall"] if stall else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", line
    procs = server_processes(pids())
    me = [psutil.Process(proc.pid)]
    c0, w0, l0 = cpu_seconds(procs), time.monotonic(), cpu_seconds(me)
    k0 = cpu_by_kind(procs)
    mem = uss_mb(procs)
    mem_kinds = uss_by_kind(procs)
    counts: dict[str, int] = {}
    for server in procs:
        with contextlib.suppress(psutil.Error):
            counts[kind_of(server)] = counts.get(kind_of(server), 0) + 1
    time.sleep(min(10, duration))
    wall = time.monotonic() - w0
    cpu = (cpu_seconds(procs) - c0) / wall * 100
    load_cpu = (cpu_seconds(me) - l0) / wall * 100
    k1 = cpu_by_kind(procs)
    cpu_kinds = {k: round((v - k0.get(k, 0.0)) / wall * 100, 1) for k, v in k1.items()}
    cpu_kinds = dict(sorted(cpu_kinds.items(), key=lambda kv: -kv[1])[:6])
    out, _ = proc.communicate(timeout=120)
    result = json.loads(out.strip().splitlines()[-1])
    result.update(cpu_pct=cpu, uss_mb=mem, uss_kinds=mem_kinds, load_cpu_pct=load_cpu)
    result.update(cpu_kinds=cpu_kinds, process_counts=counts)
    print(json.dumps(result), file=sys.stderr)
    return result


def ray_pids() -> set[int]:
    """The Ray processes this bench started (gcs, raylet, workers, Serve) and this driver."""
    me = psutil.Process()
    kids = {p.pid for p in me.children(recursive=True)}
    return kids | {me.pid}


def run_design(ingress: str, sim_port: int, stall: bool, per_actor: int) -> dict:
    """Loads (a) and (b) against /ws on a fresh local Ray, through the proxy or direct.

    "direct" is what `kisray up` runs: the replica's own server on the one port (api/ingress.py).
    """
    import tempfile

    from api.cli.ray_head import ensure_auth_token, use_local_ray_env
    from api.ingress import direct_ingress_env

    # The replica makes the session pool from its settings, before this driver asks for it.
    os.environ["KISRAY_SESSIONS_PER_ACTOR"] = str(per_actor)
    # A token of the run's own, as `kisray up` does: nothing read from or written to HOME.
    use_local_ray_env(ensure_auth_token(Path(tempfile.mkdtemp(prefix="bench-ray-"))))
    direct = free_port()
    if ingress == "direct":
        os.environ.update(direct_ingress_env(direct))  # before Ray starts: inherited
    import ray
    from ray import serve

    from actors.names import NAMESPACE, SERVE_APP
    from actors.session import session_pool
    from api.app import build_app
    from tests.api.ws_support import kill_socket_actor, start_socket_actor

    serve_port = free_port()
    ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
        serve.run(build_app(), name=SERVE_APP, route_prefix="/")
        upstream = start_socket_actor(f"ws://127.0.0.1:{sim_port}", f"http://127.0.0.1:{sim_port}")
        port = direct if ingress == "direct" else serve_port
        url = f"ws://127.0.0.1:{port}/ws?batch=1"

        def pids() -> set[int]:
            return ray_pids()

        time.sleep(2)
        idle_mb = uss_mb(server_processes(pids()))
        idle_kinds = uss_by_kind(server_processes(pids()))
        pool = session_pool(0, per_actor, park_s=5.0)  # short parking: (b) reuses (a)'s actors
        ray.get(pool.prewarm.remote(58, hold_s=600))  # 51 clients, 5 new tabs, 2 spares
        # The shipped design runs (a) for 60 s with a client that reads nothing (the issue's
        # slow-consumer case); the comparison design for 12 s.
        long = stall and ingress == SHIPPED
        a = run_load(
            url,
            sim_port,
            [ALL_CHANNELS] * 50,
            pids,
            stall=long,
            new_tabs=5,
            duration=60 if long else 12,
        )
        clients = 51 if long else 50
        # Pre-warmed actors still idle at READY (those of the new tabs) are not clients: count a
        # client as its share of the session actors it needs plus its share of everything
        # else's growth.
        session_mb = a["uss_kinds"].get("ray::SessionActor", 0.0)
        actor_mb = session_mb / max(1, a["process_counts"].get("ray::SessionActor", 0))
        needed = -(-clients // per_actor)
        others = a["uss_mb"] - idle_mb - session_mb
        a["mb_per_client"] = (actor_mb * needed + others) / clients
        a["mb_per_session_actor"] = actor_mb
        a["session_actors"] = a["process_counts"].get("ray::SessionActor", 0)
        a["mb_growth_by_kind"] = {
            k: round(v - idle_kinds.get(k, 0.0), 1)
            for k, v in sorted(a["uss_kinds"].items(), key=lambda kv: -kv[1])
        }
        three = [
            [f"{k}:{SYMBOLS[(i * 3 + j) % 20]}" for j in range(3) for k in ("trade", "book")]
            + [f"candle:{SYMBOLS[(i * 3 + j) % 20]}:1m" for j in range(3)]
            for i in range(30)
        ]
        # (a)'s sessions leave their parking for the idle pool; then (b) starts from 30 clients'
        # worth of warm actors, not (a)'s leftovers (idle actors cost CPU).
        for _ in range(60):
            pool_stats = ray.get(pool.stats.remote())
            if pool_stats["parked"] == 0 and pool_stats["leased"] <= 2:  # the replica's spares
                break
            time.sleep(0.5)
        print(f"pool after (a): {pool_stats}", file=sys.stderr)
        ray.get(pool.prewarm.remote(38, hold_s=600))
        print(f"pool before (b): {ray.get(pool.stats.remote())}", file=sys.stderr)
        b = run_load(url, sim_port, three, pids, new_tabs=5)
        del upstream
        kill_socket_actor()  # detached: it would outlive this driver otherwise
        return {"a": a, "b": b}
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def run_child_design(ingress: str, sim_port: int, stall: bool, per_actor: int) -> dict:
    cmd = [PY, __file__, "--design", ingress, "--sim-port", str(sim_port)]
    cmd += ["--sessions-per-actor", str(per_actor)]
    cmd += [] if stall else ["--no-stall"]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=900, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(
    stall: bool = True, designs: tuple[str, ...] = ("direct", "proxy"), per_actor: int = 1
) -> None:
    sim_port, base_port = free_port(), free_port()
    children: list[subprocess.Popen] = []

    def spawn(*extra: str) -> subprocess.Popen:
        proc = subprocess.Popen([PY, __file__, *extra], start_new_session=True)
        children.append(proc)
        return proc

    try:
        spawn("--sim", str(sim_port))
        wait_port(sim_port)
        results = {d: run_child_design(d, sim_port, stall, per_actor) for d in designs}
        base = spawn("--baseline", str(base_port), str(sim_port))
        wait_port(base_port)
        time.sleep(2)
        base_url = f"ws://127.0.0.1:{base_port}/ws?batch=1"
        c = run_load(base_url, sim_port, [ALL_CHANNELS] * 50, lambda: {base.pid})
    finally:
        for proc in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    best = min(designs, key=lambda d: results[d]["a"]["p99_ms"])
    # RESULT reports what `kisray up` serves: direct ingress on its one port.
    shipped = SHIPPED if SHIPPED in designs else best
    a, b = results[shipped]["a"], results[shipped]["b"]
    rows = []
    for d in designs:
        rows.append((f"(a) 50 × everything, {d}", results[d]["a"]))
        rows.append((f"(b) 30 × 3 symbols, {d}", results[d]["b"]))
    rows.append(("(c) baseline, 50 × everything", c))
    head = f"{'load':34} {'p50':>7} {'p99':>7} {'max':>8} {'delivered/expected':>22} {'CPU %':>6}"
    print(head)
    for name, r in rows:
        ratio = f"{r['delivered']}/{r['expected']} ({r['ratio']:.4f})"
        print(
            f"{name:34} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f} {r['max_ms']:8.1f} {ratio:>22} "
            f"{r['cpu_pct']:6.0f}"
        )
    print(f"best design for (a): {best}; RESULT reports the shipped one: {shipped}")
    for d in designs:
        r = results[d]["a"]
        print(
            f"{d}: new tab → first trade median {r['new_tab_ms']:.0f} ms (max "
            f"{r['new_tab_max_ms']:.0f}); {r['mb_per_client']:.1f} MB per client; "
            f"non-reader: {r['stall_closed_with']}"
        )
    print(f"new tab → first trade: median {a['new_tab_ms']:.0f} ms, max {a['new_tab_max_ms']:.0f}")
    print(f"new tab during (b): median {b['new_tab_ms']:.0f} ms, max {b['new_tab_max_ms']:.0f}")
    print(f"memory per client (USS growth incl. session actor): {a['mb_per_client']:.1f} MB")
    print(f"USS growth by process kind during (a), MB: {a['mb_growth_by_kind']}")
    print(f"new tab phases during (a), median ms: {a['new_tab_phases']}")
    print(f"server CPU % by process during (a): {a['cpu_kinds']}; (b): {b['cpu_kinds']}")
    print(f"load generator CPU % during (a): {a['load_cpu_pct']:.0f}; (b): {b['load_cpu_pct']:.0f}")
    print(f"hub (median of 0.5 s samples) during (a): {a['hub_ms']}; (b): {b['hub_ms']}")
    if a["stall_closed_with"] is not None:
        cut = a["stall_cut_after_s"]
        print(
            f"client that read nothing for {a['duration_s']:.0f} s: {a['stall_closed_with']}"
            + (f", cut {cut:.1f} s after it connected" if cut is not None else "")
            + f"; fullest outbox {a['outbox_high_water'] / 2**20:.2f} MB"
            f" (bound {a['outbox_limit'] / 2**20:.2f} MB)"
        )
        print(
            f"others' p99 while it was connected {a['p99_before_cut_ms']:.1f} ms, "
            f"after it was cut {a['p99_after_cut_ms']:.1f} ms"
        )
    print(f"clients closed during (a)/(b)/(c): {a['closed']} / {b['closed']} / {c['closed']}")
    print(f"sessions per actor: {per_actor}; session actors during (a): {a['session_actors']}")
    result = {
        "a_p99_ms": round(a["p99_ms"], 1),
        "a_delivered_ratio": round(a["ratio"], 4),
        "b_p99_ms": round(b["p99_ms"], 1),
        "baseline_p99_ms": round(c["p99_ms"], 1),
        "new_tab_ms": round(a["new_tab_ms"], 1),
        "mb_per_client": round(a["mb_per_client"], 1),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sim", type=int)
    parser.add_argument("--baseline", nargs=2, type=int)
    parser.add_argument("--load", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--sim-port", type=int)
    parser.add_argument("--channels")
    parser.add_argument("--duration", type=float, default=12)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--new-tabs", type=int, default=0)
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--design", choices=["proxy", "direct"])
    parser.add_argument("--designs", default="direct,proxy")
    parser.add_argument("--no-stall", action="store_true", help="(a) without the non-reader")
    parser.add_argument(
        "--sessions-per-actor",
        type=int,
        default=Settings.model_fields["sessions_per_actor"].default,
    )
    ns = parser.parse_args()
    if ns.sim:
        run_sim(ns.sim)
    elif ns.baseline:
        run_baseline(*ns.baseline)
    elif ns.design:
        per_actor = ns.sessions_per_actor
        print(
            json.dumps(run_design(ns.design, ns.sim_port, not ns.no_stall, per_actor)), flush=True
        )
    elif ns.load:

        async def load_and_report() -> None:
            print(json.dumps(await load(ns)), flush=True)
            os._exit(0)  # the tap's socket tasks need not wind down one by one

        asyncio.run(load_and_report())
    else:
        designs = tuple(ns.designs.split(","))
        main(stall=not ns.no_stall, designs=designs, per_actor=ns.sessions_per_actor)
