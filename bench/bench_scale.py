"""Scale: many tabs on one node, and two replicas behind one URL.

Every tab subscribes to trade, book and 1-minute candle of 3 of the 20 symbols (tab i takes
symbols 3i, 3i+1, 3i+2 modulo 20); the KIS simulator sends 2,000 trades/s plus books, as in
bench_fanout.py. For 50, 200, 500 and 1,000 tabs, in the same run:

  shipped   `/ws?batch=1` of the Serve replica (direct ingress), session actors of the default size
  baseline  one plain uvicorn/Starlette process broadcasting 20 ms windows (bench_fanout's)

Measured at every size: p50/p99 latency (upstream frame → client receive, against a tap on its own
KIS connection), delivered/expected counted per trade (each trade message names its first
trade's cumulative volume and carries consecutive trades, so it covers an exact stretch of the
tap's sequence), server CPU (all Ray processes, or the baseline's), memory per tab (growth of
the servers' unique memory, USS, divided by tabs), new-tab latency (connect → first trade).

Then a connect storm on a fresh stack (1,000 tabs connecting evenly within 10 s: time from each
tab's connect to its first trade); a burst, shipped and baseline (500 tabs joining at the same
instant a server streams to 500: the survivor's side of a failover, without the resume); and
1,000 tabs on two replicas behind one URL (Serve's HAProxy ingress), with one replica killed
mid-run: its tabs reconnect with `?resume=` through the same URL.

Tabs are raw asyncio protocols (no WebSocket library on the hot path), spread over several
load processes; each process's CPU is reported so the load generator is seen not to be the
bottleneck. The load processes run under SCHED_BATCH (KISRAY_BENCH_CLIENT_SCHED=normal turns that
off): on one machine a woken tab process would otherwise preempt the server at every frame it is
sent, a cost no remote browser puts on the server. The tap keeps the normal policy, so its clock
is never late (a late tap would make latencies look shorter).

Run: .venv/bin/python bench/bench_scale.py   (about 10 minutes)
     --sizes 50,200 --skip storm,burst,replicas   for a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_fanout as fan

PY = sys.executable
SYMBOLS = fan.SYMBOLS
TABS_PER_PROCESS = 250
STORM_TABS = 1000
STORM_S = 10.0
BURST_TABS = 500  # join at once while as many stream: the survivor's side of a failover
BUCKET_MS = 0.5  # latency histogram resolution
STORM_PHASES = ("connected", "upgraded", "session", "subscribed")  # a new tab's, in order
RESUME_PHASES = ("upgraded", "session", "subscribed")  # a resumed tab's, from its reconnect
CLIENT_SCHED_ENV = "KISRAY_BENCH_CLIENT_SCHED"  # "batch" (default) or "normal"


def channels_of(tab: int) -> list[str]:
    symbols = [SYMBOLS[(tab * 3 + j) % len(SYMBOLS)] for j in range(3)]
    return [f"{kind}:{s}" for s in symbols for kind in ("trade", "book")] + [
        f"candle:{s}:1m" for s in symbols
    ]


# -- the load generator ------------------------------------------------------------------------

TRADE_HEAD = '{"type":"trade","symbol":"'


class Tab(asyncio.Protocol):
    """A browser tab's socket, as cheap as a client can be: parse frames, scan trades."""

    def __init__(self, host: str, port: int, path: str, channels: list[str]) -> None:
        self.host, self.port, self.path = host, port, path
        self.channels = channels
        self.buf = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None
        self.samples: list[tuple[str, int, int, float]] = []  # symbol, first cum, trades, recv
        self.started = 0.0
        self.first_trade_at: float | None = None
        self.got_first = asyncio.Event()
        self.closed = asyncio.Event()
        self.closed_with: str | None = None
        self.session_id: str | None = None
        self.connected_at: float | None = None  # TCP connection made
        self.upgraded_at: float | None = None  # the `101 Switching Protocols` came
        self.session_at: float | None = None  # when the `session` message came
        self.subscribed_at: float | None = None  # when the first `subscribed` came
        self.last: dict[str, int] = {}  # symbol → cum_volume of the last trade received
        self.gaps = 0  # gap markers: trades the server could not replay after a resume
        self._fragments: list[bytes] = []

    async def connect(self, query: str = "") -> None:
        self.started = time.time()
        self.open = False
        self.buf.clear()
        self.closed.clear()
        self.closed_with = None
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, self.host, self.port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected_at = time.time()
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_with = self.closed_with or "connection lost"
        self.closed.set()

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(head + mask + body)

    def subscribe(self) -> None:
        self.send(1, json.dumps({"op": "subscribe", "channels": self.channels}).encode())

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status:
                self.closed_with = status.decode(errors="replace")
                assert self.transport is not None
                self.transport.close()
                return
            del buf[: end + 4]
            self.open = True
            self.upgraded_at = time.time()
            if "resume=" not in self.path:  # a resumed session restores its own channels
                self.subscribe()
        now = time.time()
        while len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + n:
                return
            head, payload = buf[0], bytes(buf[at : at + n])
            del buf[: at + n]
            opcode = head & 0x0F
            if opcode in (0, 1):
                self._fragments.append(payload)
                if head & 0x80:
                    self.on_text(b"".join(self._fragments).decode(), now)
                    self._fragments.clear()
            elif opcode == 9:
                self.send(0xA, payload)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.closed_with = self.closed_with or f"close {code}"
                assert self.transport is not None
                self.transport.close()

    def on_text(self, text: str, now: float) -> None:
        if self.subscribed_at is None and '"type":"subscribed"' in text:
            self.subscribed_at = now
        if self.session_at is None and '"type":"session"' in text:
            self.session_at = now
            i = text.find('"id":"') + 6
            self.session_id = text[i : i + 32]
        for part in text.split(TRADE_HEAD)[1:]:
            if self.first_trade_at is None:
                self.first_trade_at = now
                self.got_first.set()
            i = part.find('"cum_volume":') + 13
            first = int(part[i : part.find("}", i)])
            self.samples.append((part[:6], first, part.count('"price"'), now))
            j = part.rfind('"cum_volume":') + 13
            self.last[part[:6]] = int(part[j : part.find("}", j)])
        if '"type":"gap"' in text:
            self.gaps += text.count('"type":"gap"')
        if '"type":"error"' in text:
            i = text.find('"code":"') + 8
            self.closed_with = text[i : text.find('"', i)]


class Tap(fan.Tap):
    """bench_fanout's tap, which can also be handed from its process to the orchestrator."""

    def dump(self) -> dict[str, list[tuple[int, float]]]:
        return {symbol: list(seq) for symbol, seq in self.order.items()}

    @classmethod
    def from_dump(cls, order: dict[str, list[list[float]]]) -> Tap:
        tap = cls(0)
        for symbol, seq in order.items():
            tap.order[symbol] = [(int(cum), at) for cum, at in seq]
            for i, (cum, _) in enumerate(tap.order[symbol]):
                tap.position[(symbol, cum)] = i
        return tap


class TapProcess:
    """The one tap of a measurement, in a process of its own (not a server, not a tab)."""

    def __init__(self, sim_port: int) -> None:
        self.proc = subprocess.Popen(
            [PY, __file__, "--tap", "--sim-port", str(sim_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "READY"

    def read(self) -> Tap:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("dump\n")
        self.proc.stdin.flush()
        return Tap.from_dump(json.loads(self.proc.stdout.readline()))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


async def tap_main(args: argparse.Namespace) -> None:
    tap = Tap(args.sim_port, f"bench-tap-{os.getpid()}")
    await tap.start()
    await asyncio.sleep(1.0)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("READY", flush=True)
    while await reader.readline():
        print(json.dumps(tap.dump()), flush=True)
    os._exit(0)


def score(tabs: list, tap: Tap, t0: float, t1: float) -> dict:
    """Latency histogram and per-trade delivery of the trades that reached the tap in [t0, t1)."""
    histogram: dict[int, int] = {}
    delivered = expected = unmatched = missing_tabs = 0
    windows = {s: tap.window(s, t0, t1) for s in SYMBOLS}
    for tab in tabs:
        covered, timed, missed = tap.match(tab.samples, t0, t1)
        unmatched += missed
        for at, recv in timed:
            bucket = int((recv - at) * 1000 / BUCKET_MS)
            histogram[bucket] = histogram.get(bucket, 0) + 1
        short = False
        for symbol in {c.split(":")[1] for c in tab.channels}:
            want = windows[symbol]
            got = len(covered.get(symbol, set()).intersection(want))
            expected += len(want)
            delivered += got
            short = short or got < len(want)
        missing_tabs += short
    return {
        "histogram": histogram,
        "delivered": delivered,
        "expected": expected,
        "unmatched": unmatched,
        "tabs_short": missing_tabs,
    }


async def open_tabs(url: str, first: int, count: int, spread_s: float = 0.0) -> list[Tab]:
    """Connect tabs first … first+count-1; spread_s > 0 spaces the connects evenly."""
    host_port, path = url.split("//", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    tabs = [Tab(host, int(port), "/" + path, channels_of(first + i)) for i in range(count)]
    gate = asyncio.Semaphore(64)  # a browser storm does not open 1,000 TCP handshakes at once

    async def one(i: int, tab: Tab) -> None:
        if spread_s:
            await asyncio.sleep(i * spread_s / count)
        async with gate:
            try:
                await tab.connect()
            except OSError as exc:
                tab.closed_with = f"connect: {exc.strerror}"

    await asyncio.gather(*(one(i, t) for i, t in enumerate(tabs)))
    return tabs


async def load_main(args: argparse.Namespace) -> None:
    """One load process. Talks to the orchestrator in lines: READY → go → (measure) → JSON."""
    import uvloop  # noqa: F401  (the policy is set by the caller)

    if os.environ.get(CLIENT_SCHED_ENV, "batch") == "batch":
        # Browsers are other machines. Here a frame written to a tab wakes its load process,
        # and a woken process preempts the writer: every write cost the server a context switch
        # (the storm's first trade p99 was 9.5-15 s with this, 1.5 s without). SCHED_BATCH
        # keeps the load processes' share of CPU but lets them wait for their turn.
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    me = psutil.Process()
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    if args.mode == "storm":
        print("READY", flush=True)
        await reader.readline()
        started = time.time()
        tabs = await open_tabs(args.url, args.first, args.count, spread_s=args.spread)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*(t.got_first.wait() for t in tabs))
        firsts = [((t.first_trade_at or time.time() + 999) - t.started) * 1000 for t in tabs]
        print(
            json.dumps(
                {
                    "first_trade_ms": firsts,
                    **{
                        f"{phase}_ms": [
                            ((getattr(t, f"{phase}_at") or time.time() + 999) - t.started) * 1000
                            for t in tabs
                        ]
                        for phase in STORM_PHASES
                    },
                    "connect_spread_s": max(t.started for t in tabs) - started,
                    "closed": [t.closed_with for t in tabs if t.closed_with],
                }
            ),
            flush=True,
        )
        os._exit(0)
    tabs = await open_tabs(args.url, args.first, args.count)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            await asyncio.gather(*(t.got_first.wait() for t in tabs))
    await asyncio.sleep(args.warmup)
    print("READY", sum(t.first_trade_at is not None for t in tabs), flush=True)
    await reader.readline()
    c0, w0 = sum(me.cpu_times()[:2]), time.monotonic()
    t0 = time.time()
    killed_at: float | None = None
    if args.resume:
        # Process 0 tells the orchestrator when to kill a replica; every tab whose socket
        # closes resumes.
        async def resume(tab: Tab) -> None:
            await tab.closed.wait()
            await asyncio.sleep(0.05)
            last = ",".join(f"{s}:{cum}" for s, cum in tab.last.items())
            tab.path = tab.path.split("&resume=")[0] + f"&resume={tab.session_id}&last={last}"
            tab.resumed_from = time.time()  # type: ignore[attr-defined]
            tab.upgraded_at = tab.session_at = tab.subscribed_at = None
            tab.first_trade_at = None
            tab.got_first.clear()
            for _ in range(40):
                try:
                    await tab.connect()
                    return
                except OSError:
                    await asyncio.sleep(0.05)

        _resumers = [asyncio.create_task(resume(t)) for t in tabs]  # held: tasks are weak refs
        await asyncio.sleep(args.kill_after)
        killed_at = time.time()
        if args.first == 0:
            print("KILL", flush=True)
    await asyncio.sleep(args.duration - (time.time() - t0))
    t1 = time.time()
    cpu = (sum(me.cpu_times()[:2]) - c0) / (time.monotonic() - w0) * 100
    new_tab: list[float] = []
    for k in range(args.new_tabs):
        (tab,) = await open_tabs(args.url, args.first + k, 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tab.got_first.wait(), 10)
        new_tab.append(((tab.first_trade_at or time.time()) - tab.started) * 1000)
        if tab.closed_with:
            print(f"new tab: {tab.closed_with}", file=sys.stderr)
        if tab.transport is not None:
            tab.transport.close()
        await asyncio.sleep(0.3)
    await asyncio.sleep(3.0)  # stragglers of the measured interval (p99 can pass 1 s)
    # The orchestrator scores the samples against the tap.
    samples = [[t.channels, t.samples] for t in tabs]
    report = json.dumps({"t0": t0, "t1": t1, "tabs": samples})
    await asyncio.to_thread(Path(args.out).write_text, report)
    result: dict = {}
    result.update(
        load_cpu_pct=cpu,
        new_tab_ms=new_tab,
        closed=[t.closed_with for t in tabs if t.closed_with and not args.resume],
        connected=sum(t.first_trade_at is not None for t in tabs),
    )
    if killed_at is not None:
        moved = [t for t in tabs if hasattr(t, "resumed_from")]
        result["resumed"] = len(moved)
        result["resume_ms"] = [
            ((t.first_trade_at or time.time() + 999) - t.resumed_from) * 1000 for t in moved
        ]
        result["gone_ms"] = [(t.resumed_from - killed_at) * 1000 for t in moved]
        result["resume_from_kill_ms"] = [
            ((t.first_trade_at or time.time() + 999) - killed_at) * 1000 for t in moved
        ]
        result["gaps"] = sum(t.gaps for t in tabs)
        stuck = [t.closed_with or "open" for t in moved if t.first_trade_at is None]
        result["resume_stuck"] = {why: stuck.count(why) for why in set(stuck)}
        result["resume_phase_ms"] = {
            phase: [
                ((getattr(t, f"{phase}_at") or time.time() + 999) - t.resumed_from) * 1000
                for t in moved
            ]
            for phase in RESUME_PHASES
        }
    print(json.dumps(result), flush=True)
    os._exit(0)  # a thousand sockets need not wind down one by one


# -- orchestration ------------------------------------------------------------------------------


class Loaders:
    """Load processes for `tabs` tabs, at most TABS_PER_PROCESS each."""

    def __init__(self, url: str, sim_port: int, tabs: int, mode: str, **options: object) -> None:
        import tempfile

        self.procs: list[subprocess.Popen] = []
        self.outs: list[Path] = []  # each process's samples, for the orchestrator to score
        per = -(-tabs // TABS_PER_PROCESS)
        for k in range(per):
            first, count = k * tabs // per, (k + 1) * tabs // per - k * tabs // per
            self.outs.append(Path(tempfile.mkstemp(prefix="bench-scale-", suffix=".json")[1]))
            cmd = [PY, __file__, "--load", "--url", url, "--sim-port", str(sim_port)]
            cmd += ["--first", str(first), "--count", str(count), "--mode", mode]
            cmd += ["--out", str(self.outs[-1])]
            for name, value in options.items():
                if k and name == "new_tabs":
                    value = 0  # one process probes new tabs
                cmd += [f"--{name.replace('_', '-')}", str(value)]
            if options.get("kill_after"):
                cmd += ["--resume"]
            self.procs.append(
                subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )

    def ready(self) -> int:
        connected = 0
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            assert line and line[0] == "READY", line
            connected += int(line[1]) if len(line) > 1 else 0
        return connected

    def go(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def wait_line(self, word: str) -> None:
        assert self.procs[0].stdout is not None
        line = self.procs[0].stdout.readline().strip()
        assert line == word, line

    def results(self, tap: TapProcess | None = None) -> list[dict]:
        """Each process's report; with the tap, its tabs scored against it."""
        out = []
        for proc in self.procs:
            text, _ = proc.communicate(timeout=180)
            out.append(json.loads(text.strip().splitlines()[-1]))
        if tap is not None:
            seen = tap.read()
            for result, path in zip(out, self.outs, strict=True):
                data = json.loads(path.read_text())
                tabs = [Scored(channels, samples) for channels, samples in data["tabs"]]
                result.update(score(tabs, seen, data["t0"], data["t1"]))
        for path in self.outs:
            path.unlink(missing_ok=True)
        return out

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


class Scored:
    """A tab as the load process reported it."""

    def __init__(self, channels: list[str], samples: list[list]) -> None:
        self.channels = channels
        self.samples = [(s, int(first), int(n), recv) for s, first, n, recv in samples]


def ranked(ordered: list[float], p: float) -> float:
    """The `p` quantile of sorted values: the value at rank p·n (the last one at most)."""
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def percentile(histogram: dict[int, int], p: float) -> float:
    total = sum(histogram.values())
    if not total:
        return -1.0
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= p * total:
            return (bucket + 0.5) * BUCKET_MS
    return -1.0


def merge(results: list[dict]) -> dict:
    histogram: dict[int, int] = {}
    for r in results:
        for bucket, n in r["histogram"].items():
            histogram[int(bucket)] = histogram.get(int(bucket), 0) + n
    total = {k: sum(r[k] for r in results) for k in ("delivered", "expected", "tabs_short")}
    new_tab = sorted(ms for r in results for ms in r["new_tab_ms"])
    return {
        "p50_ms": percentile(histogram, 0.50),
        "p99_ms": percentile(histogram, 0.99),
        "max_ms": max(histogram, default=0) * BUCKET_MS,
        **total,
        "ratio": total["delivered"] / total["expected"] if total["expected"] else 0.0,
        "new_tab_ms": new_tab[len(new_tab) // 2] if new_tab else -1.0,
        "load_cpu_pct": [round(r["load_cpu_pct"]) for r in results],
        "closed": [c for r in results for c in r["closed"]],
        "connected": sum(r["connected"] for r in results),
    }


def measure(
    url: str,
    sim_port: int,
    tabs: int,
    server_pids,
    *,
    duration: float = 10.0,
    new_tabs: int = 5,
    kill=None,
    kill_after: float = 0.0,
    idle_mb: dict[str, float] | None = None,
    stats_url: str | None = None,
    per_actor: int = 1,
    tap: TapProcess,
) -> dict:
    """`tabs` tabs for `duration` seconds: latency, delivery, server CPU and memory.

    Memory per tab: the servers' USS growth since `idle_mb` (taken before any tab) divided by
    tabs, with session actors counted as the share of them the tabs need (an idle spare actor
    left by an earlier size is not a tab's cost)."""
    loaders = Loaders(
        url,
        sim_port,
        tabs,
        "steady",
        duration=duration,
        warmup=3,
        new_tabs=new_tabs,
        kill_after=kill_after,
    )
    connected = loaders.ready()
    # The load processes are this driver's children too: they are not the server.
    load = {*loaders.pids(), tap.proc.pid}
    procs = [p for p in fan.server_processes(server_pids()) if p.pid not in load]
    mb_per_tab = per_tab_mb(procs, idle_mb or {}, tabs, per_actor)
    c0, w0 = cpu_by_pid(procs), time.monotonic()
    k0 = fan.cpu_by_kind(procs)
    loaders.go()
    hub: list[dict] = []
    if stats_url:
        hub_watch = threading.Thread(target=watch_hub, args=(stats_url, duration, hub), daemon=True)
        hub_watch.start()
    if kill is not None:
        loaders.wait_line("KILL")
        kill()
    time.sleep(duration)
    wall = time.monotonic() - w0
    cpu = cpu_pct_since(procs, c0, w0)
    k1 = fan.cpu_by_kind(procs)
    by_kind = {k: round((v - k0.get(k, 0.0)) / wall * 100) for k, v in k1.items()}
    results = loaders.results(tap)
    out = merge(results)
    out.update(tabs=tabs, cpu_pct=cpu, ready=connected, mb_per_tab=mb_per_tab)
    out.update(cpu_by_kind=dict(sorted(by_kind.items(), key=lambda kv: -kv[1])[:5]), hub=hub)
    if kill is not None:
        resume = sorted(ms for r in results for ms in r.get("resume_ms", []))
        out["resumed"] = sum(r.get("resumed", 0) for r in results)
        out["resume_p99_ms"] = ranked(resume, 0.99) if resume else -1
        out["resume_max_ms"] = resume[-1] if resume else -1
        from_kill = sorted(ms for r in results for ms in r.get("resume_from_kill_ms", []))
        out["resume_from_kill_p99_ms"] = ranked(from_kill, 0.99) if from_kill else -1
        out["gaps"] = sum(r.get("gaps", 0) for r in results)
        out["resume_stuck"] = {}
        for r in results:
            for why, count in r.get("resume_stuck", {}).items():
                out["resume_stuck"][why] = out["resume_stuck"].get(why, 0) + count
        for phase in RESUME_PHASES:
            phase_ms = (r.get("resume_phase_ms", {}).get(phase, []) for r in results)
            times = sorted(ms for each in phase_ms for ms in each)
            if times:
                out[f"resume_{phase}_p50_ms"] = ranked(times, 0.5)
                out[f"resume_{phase}_p99_ms"] = ranked(times, 0.99)
    print(json.dumps({k: v for k, v in out.items()}), file=sys.stderr, flush=True)
    return out


SESSION_ACTOR = "ray::SessionActor"


def cpu_pct_since(procs: list[psutil.Process], before: dict[int, float], t0: float) -> float:
    """The processes' CPU % (of one core) since `before` was taken at monotonic `t0`. A process
    that died meanwhile is not known to the end: only survivors are summed."""
    after = cpu_by_pid(procs)
    used = sum(after[pid] - before[pid] for pid in after if pid in before)
    return used / (time.monotonic() - t0) * 100


def cpu_by_pid(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def per_tab_mb(
    procs: list[psutil.Process], idle: dict[str, float], tabs: int, per_actor: int
) -> float:
    """USS growth per tab; session actors counted by what the tabs need of them."""
    now = fan.uss_by_kind(procs)
    others = sum(v - idle.get(k, 0.0) for k, v in now.items() if k != SESSION_ACTOR)
    actors = sum(1 for p in procs if fan.kind_of(p) == SESSION_ACTOR)
    needed = -(-tabs // per_actor) if actors else 0
    return (others + now.get(SESSION_ACTOR, 0.0) / max(1, actors) * needed) / tabs


def watch_hub(url: str, duration: float, out: list[dict]) -> None:
    """The replica's hub as /ws/stats shows it, every 2 s of the measurement."""
    import httpx

    for _ in range(int(duration // 2)):
        time.sleep(2)
        with contextlib.suppress(httpx.HTTPError, ValueError):
            stats = httpx.get(url, timeout=2).json()
            out.append(
                {
                    k: stats.get(k)
                    for k in (
                        "window_ms",
                        "pull_ms",
                        "deliver_ms",
                        "lag_ms",
                        "gc_worst_ms",
                        "gc_total_ms",
                        "gc_full",
                    )
                }
            )


def storm(url: str, sim_port: int) -> dict:
    loaders = Loaders(url, sim_port, STORM_TABS, "storm", spread=STORM_S)
    loaders.ready()
    loaders.go()
    return first_trades(loaders.results())


def burst(url: str, sim_port: int, server_pids) -> dict:
    """BURST_TABS tabs join at the same instant a server already streaming to as many: a killed
    replica's tabs arriving at the survivor, without the resume. Connect → each phase and the
    first trade, and the server's CPU over the burst's first 5 s (is the server the limit?)."""
    streaming = Loaders(url, sim_port, BURST_TABS, "steady", duration=25, warmup=3)
    streaming.ready()
    streaming.go()
    time.sleep(3)
    joining = Loaders(url, sim_port, BURST_TABS, "storm", spread=0.0)
    joining.ready()
    load = {*streaming.pids(), *joining.pids()}
    procs = [p for p in fan.server_processes(server_pids()) if p.pid not in load]
    c0, w0 = cpu_by_pid(procs), time.monotonic()
    joining.go()
    time.sleep(5)
    cpu = cpu_pct_since(procs, c0, w0)
    results = joining.results()
    streaming.results()
    return {**first_trades(results), "server_cpu_pct_first_5s": cpu}


def first_trades(results: list[dict]) -> dict:
    """New tabs' phases and first trade, from connect (storm-mode load processes' reports)."""
    firsts = sorted(ms for r in results for ms in r["first_trade_ms"])
    phases = {}
    for phase in STORM_PHASES:
        times = sorted(ms for r in results for ms in r[f"{phase}_ms"])
        phases[f"{phase}_p50_ms"] = ranked(times, 0.5)
        phases[f"{phase}_p99_ms"] = ranked(times, 0.99)
    return {
        **phases,
        "tabs": len(firsts),
        "first_trade_p50_ms": ranked(firsts, 0.5),
        "first_trade_p99_ms": ranked(firsts, 0.99),
        "first_trade_max_ms": firsts[-1],
        "closed": [c for r in results for c in r["closed"]],
    }


def free_range(count: int) -> range:
    """`count` consecutive free ports."""
    while True:
        first = fan.free_port()
        ports = range(first, first + count)
        if all(_free(p) for p in ports):
            return ports


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def ray_stack(sim_port: int, replicas: int):
    """Start a local Ray with the shipped app (direct ingress on one URL), as `kisray up` does.
    Returns (url, pids, kill one replica, shut down)."""
    import tempfile

    from api.cli.ray_head import ensure_auth_token, use_local_ray_env
    from api.ingress import direct_ingress_env

    use_local_ray_env(ensure_auth_token(Path(tempfile.mkdtemp(prefix="bench-ray-"))))
    port = fan.free_port()
    # One replica serves on the URL's port itself; more get a range behind haproxy (with one
    # spare port), as `kisray up` with KISRAY_REPLICAS does.
    ports = range(port, port + 1) if replicas == 1 else free_range(replicas + 1)
    os.environ.update(direct_ingress_env(ports.start, len(ports)))
    import ray
    from ray import serve

    from actors.names import NAMESPACE, SERVE_APP
    from api.app import KisrayIngress
    from tests.api.ws_support import kill_socket_actor, start_socket_actor

    serve_port = fan.free_port()
    ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
    serve.run(KisrayIngress.options(num_replicas=replicas).bind(), name=SERVE_APP, route_prefix="/")
    upstream = start_socket_actor(f"ws://127.0.0.1:{sim_port}", f"http://127.0.0.1:{sim_port}")
    balancer = None
    if replicas > 1:
        from api.cli.balancer import Balancer, BalancerConfig

        work = Path(tempfile.mkdtemp(prefix="bench-haproxy-"))
        config = BalancerConfig("127.0.0.1", port, ports, work / "503.http")
        balancer = Balancer(config, work, work / "haproxy.log")
        balancer.start()
    url = f"ws://127.0.0.1:{port}/ws?batch=1"
    fan.wait_port(port)
    time.sleep(2)

    def pids() -> set[int]:
        return fan.ray_pids()

    def kill_replica() -> None:
        """SIGKILL one replica's process, as a crash or an OOM kill would."""
        replicas_now = [
            p for p in fan.server_processes(pids()) if "ServeReplica:" in " ".join(p.cmdline())
        ]
        replicas_now[0].send_signal(signal.SIGKILL)

    def shutdown() -> None:
        nonlocal upstream
        del upstream
        kill_socket_actor()
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        if balancer is not None:
            balancer.stop()

    return url, pids, kill_replica, shutdown


def run_shipped(sim_port: int, sizes: list[int], skip: set[str]) -> dict:
    url, pids, _, shutdown = ray_stack(sim_port, 1)  # before importing Ray: its auth settings
    import ray

    from actors.session import session_pool
    from engine.config import get_settings

    out: dict = {"sizes": {}}
    settings = get_settings()
    stats_url = url.replace("ws://", "http://").split("/ws")[0] + "/ws/stats"
    tap = TapProcess(sim_port)
    try:
        idle = fan.uss_by_kind(fan.server_processes(pids()))  # before any tab
        pool = session_pool(settings.ws_session_pool, settings.sessions_per_actor)
        for tabs in sizes:
            time.sleep(6)  # the previous size's sessions leave their parking
            ray.get(pool.prewarm.remote(tabs + 10, hold_s=600))
            time.sleep(1)
            out["sizes"][tabs] = measure(
                url,
                sim_port,
                tabs,
                pids,
                idle_mb=idle,
                stats_url=stats_url,
                per_actor=settings.sessions_per_actor,
                tap=tap,
            )
            out["sizes"][tabs]["session_actors"] = ray.get(pool.stats.remote()).get("actors")
    finally:
        tap.stop()
        shutdown()
    return out


def run_storm(sim_port: int) -> dict:
    """A fresh stack, the session pool as /health warmed it and nothing more."""
    url, _, _, shutdown = ray_stack(sim_port, 1)
    try:
        return storm(url, sim_port)
    finally:
        shutdown()


def run_burst(sim_port: int) -> dict:
    """A fresh stack whose pool holds a session for every tab: a failover's tabs have theirs."""
    url, pids, _, shutdown = ray_stack(sim_port, 1)
    import ray

    from actors.session import session_pool
    from engine.config import get_settings

    try:
        settings = get_settings()
        pool = session_pool(settings.ws_session_pool, settings.sessions_per_actor)
        ray.get(pool.prewarm.remote(2 * BURST_TABS + 10, hold_s=600))
        time.sleep(1)
        return burst(url, sim_port, pids)
    finally:
        shutdown()


def run_replicas(sim_port: int, tabs: int) -> dict:
    url, pids, kill_replica, shutdown = ray_stack(sim_port, 2)
    import ray

    from actors.session import session_pool
    from engine.config import get_settings

    tap = TapProcess(sim_port)
    try:
        settings = get_settings()
        idle = fan.uss_by_kind(fan.server_processes(pids()))
        pool = session_pool(settings.ws_session_pool, settings.sessions_per_actor)
        ray.get(pool.prewarm.remote(tabs + 10, hold_s=600))
        options = {"idle_mb": idle, "per_actor": settings.sessions_per_actor, "tap": tap}
        steady = measure(url, sim_port, tabs, pids, **options)
        time.sleep(6)
        killed = measure(
            url, sim_port, tabs, pids, kill=kill_replica, kill_after=4.0, new_tabs=0, **options
        )
    finally:
        tap.stop()
        shutdown()
    return {"steady": steady, "killed": killed}


def run_baseline(sim_port: int, sizes: list[int], with_burst: bool) -> dict:
    port = fan.free_port()
    proc = subprocess.Popen(
        [PY, fan.__file__, "--baseline", str(port), str(sim_port)], start_new_session=True
    )
    tap = TapProcess(sim_port)
    try:
        fan.wait_port(port)
        time.sleep(2)
        url = f"ws://127.0.0.1:{port}/ws?batch=1"
        idle = fan.uss_by_kind(fan.server_processes({proc.pid}))
        out: dict = {
            tabs: measure(url, sim_port, tabs, lambda: {proc.pid}, idle_mb=idle, tap=tap)
            for tabs in sizes
        }
        if with_burst:
            out["burst"] = burst(url, sim_port, lambda: {proc.pid})
        return out
    finally:
        tap.stop()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def child(kind: str, sim_port: int, sizes: list[int], skip: set[str]) -> dict:
    """Each Ray stack in a process of its own: a fresh Ray, nothing left over."""
    cmd = [PY, __file__, "--stack", kind, "--sim-port", str(sim_port)]
    cmd += ["--sizes", ",".join(map(str, sizes)), "--skip", ",".join(skip) or "-"]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=1800, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(sizes: list[int], skip: set[str]) -> None:
    sim_port = fan.free_port()
    sim = subprocess.Popen([PY, fan.__file__, "--sim", str(sim_port)], start_new_session=True)
    try:
        fan.wait_port(sim_port)
        shipped = child("shipped", sim_port, sizes, skip)
        if "storm" not in skip:
            shipped["storm"] = child("storm", sim_port, sizes, skip)
        replicas = child("replicas", sim_port, [max(sizes)], skip) if "replicas" not in skip else {}
        if "burst" not in skip:
            shipped["burst"] = child("burst", sim_port, sizes, skip)
        base = run_baseline(sim_port, sizes, "burst" not in skip)
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        sim.wait(10)
    report(sizes, shipped, base, replicas)


def report(sizes: list[int], shipped: dict, base: dict, replicas: dict) -> None:
    head = (
        f"{'design':10} {'tabs':>5} {'p50':>7} {'p99':>7} {'max':>7} {'delivered/expected':>26}"
        f" {'CPU %':>6} {'MB/tab':>7} {'new tab':>8} {'load CPU % per process':>24}"
    )
    print(head)
    rows = [("shipped", shipped["sizes"]), ("baseline", base)]
    if replicas:
        rows.append(("2 replicas", {max(sizes): replicas["steady"]}))
        rows.append(("2r, kill", {max(sizes): replicas["killed"]}))
    for name, by_size in rows:
        for tabs in sizes:
            r = by_size.get(tabs) or by_size.get(str(tabs))
            if r is None:
                continue
            ratio = f"{r['delivered']}/{r['expected']} ({r['ratio']:.5f})"
            print(
                f"{name:10} {tabs:5} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f} {r['max_ms']:7.1f}"
                f" {ratio:>26} {r['cpu_pct']:6.0f} {r['mb_per_tab']:7.2f}"
                f" {r['new_tab_ms']:8.0f} {r['load_cpu_pct']!s:>24}"
            )
    big = max(sizes)
    s = shipped["sizes"].get(str(big)) or shipped["sizes"][big]
    b = base.get(big) or base[str(big)]
    for name, by_size in rows:
        for tabs in sizes:
            r = by_size.get(tabs) or by_size.get(str(tabs))
            if r and (r["closed"] or r["tabs_short"]):
                print(
                    f"{name} {tabs}: closed {r['closed'][:5]}; "
                    f"tabs short of trades {r['tabs_short']}"
                )
    if "storm" in shipped:
        st = shipped["storm"]
        print(
            f"connect storm, {st['tabs']} tabs within {STORM_S:.0f} s: first trade p50 "
            f"{st['first_trade_p50_ms']:.0f} ms, p99 {st['first_trade_p99_ms']:.0f}, max "
            f"{st['first_trade_max_ms']:.0f}; closed {st['closed'][:5]}"
        )
        phases = "; ".join(
            f"{phase} p50 {st[f'{phase}_p50_ms']:.0f} ms, p99 {st[f'{phase}_p99_ms']:.0f}"
            for phase in STORM_PHASES
        )
        print(f"  from connect: {phases}")
    for name, bu in (("shipped", shipped.get("burst")), ("baseline", base.get("burst"))):
        if bu:
            print(
                f"burst, {BURST_TABS} tabs join {BURST_TABS} streaming, {name}: first trade p50 "
                f"{bu['first_trade_p50_ms']:.0f} ms, p99 {bu['first_trade_p99_ms']:.0f}; 101 p50 "
                f"{bu['upgraded_p50_ms']:.0f} ms, p99 {bu['upgraded_p99_ms']:.0f}; server CPU "
                f"{bu['server_cpu_pct_first_5s']:.0f} % in the first 5 s; closed {bu['closed'][:5]}"
            )
    if replicas:
        k = replicas["killed"]
        print(
            f"2 replicas, one killed: {k['resumed']} tabs resumed through the same URL, "
            f"kill → first trade p99 {k['resume_from_kill_p99_ms']:.0f} ms; reconnect → first "
            f"trade p99 {k['resume_p99_ms']:.0f} ms (max {k['resume_max_ms']:.0f}); "
            f"delivered {k['delivered']}/{k['expected']} ({k['ratio']:.5f}); gap markers "
            f"{k['gaps']}"
        )
        phases = "; ".join(
            f"{phase} p50 {k.get(f'resume_{phase}_p50_ms', -1):.0f} ms, p99 "
            f"{k.get(f'resume_{phase}_p99_ms', -1):.0f}"
            for phase in RESUME_PHASES
        )
        print(f"  from reconnect: {phases}; without a trade at the end: {k.get('resume_stuck')}")
    result = {
        "p99_ms_1000": round(s["p99_ms"], 1),
        "baseline_p99_ms_1000": round(b["p99_ms"], 1),
        "delivered_1000": round(s["ratio"], 5),
        "mb_per_tab_1000": round(s["mb_per_tab"], 2),
        "cpu_ratio_1000": round(s["cpu_pct"] / max(b["cpu_pct"], 1e-9), 2),
        "storm_first_trade_p99_ms": round(shipped["storm"]["first_trade_p99_ms"], 1)
        if "storm" in shipped
        else None,
        "replicas2_p99_ms_1000": round(replicas["steady"]["p99_ms"], 1) if replicas else None,
        "burst_first_trade_p99_ms": _burst_p99(shipped),
        "baseline_burst_first_trade_p99_ms": _burst_p99(base),
    }
    print("RESULT " + json.dumps(result))


def _burst_p99(runs: dict) -> float | None:
    return round(runs["burst"]["first_trade_p99_ms"], 1) if "burst" in runs else None


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="50,200,500,1000")
    parser.add_argument("--skip", default="", help="storm,burst,replicas")
    parser.add_argument("--stack", choices=["shipped", "replicas", "storm", "burst"])
    parser.add_argument("--load", action="store_true")
    parser.add_argument("--tap", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--url")
    parser.add_argument("--sim-port", type=int)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--mode", choices=["steady", "storm"], default="steady")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--new-tabs", type=int, default=0)
    parser.add_argument("--kill-after", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true", help="tabs resume when cut")
    parser.add_argument("--spread", type=float, default=0.0)
    ns = parser.parse_args()
    sizes = [int(s) for s in ns.sizes.split(",")]
    skip = {s for s in ns.skip.split(",") if s and s != "-"}
    if ns.load:
        import uvloop

        uvloop.run(load_main(ns))
    elif ns.tap:
        asyncio.run(tap_main(ns))
    elif ns.stack == "storm":
        print(json.dumps(run_storm(ns.sim_port)), flush=True)
    elif ns.stack == "burst":
        print(json.dumps(run_burst(ns.sim_port)), flush=True)
    elif ns.stack == "shipped":
        print(json.dumps(run_shipped(ns.sim_port, sizes, skip)), flush=True)
    elif ns.stack == "replicas":
        print(json.dumps(run_replicas(ns.sim_port, sizes[0])), flush=True)
    else:
        main(sizes, skip)
