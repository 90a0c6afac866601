"""Connection churn (issue 15): do session actors, memory and file descriptors come back to their
baseline after many tabs came and went?

On one `kisray up` (empty HOME, fresh data dir): a baseline with 3 steady tabs, then N cycles
(default 500) of a tab that connects, subscribes to trades, gets its first trade and closes,
CONCURRENCY at a time. Then it samples every 15 s up to 90 s: the session actors alive, the RSS of
every process of the stack (the `kisray up` process and all its descendants: Ray, the replica,
the actors, the simulator) and the replica's open file descriptors.

Ends with RESULT {"cycles", "actors_baseline", "actors_after_60s", "rss_mb_baseline",
"rss_mb_after_60s", "replica_fds_baseline", "replica_fds_after_60s", "within_5pct"}.

Run: .venv/bin/python bench/bench_churn.py [--cycles 500]   (about 4 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_restart import env_for, free_port, replica_process, start

CONCURRENCY = 10
STEADY_TABS = 3


def sample(up_pid: int) -> dict[str, float]:
    procs = [psutil.Process(up_pid), *psutil.Process(up_pid).children(recursive=True)]
    rss = actors = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            rss += proc.memory_info().rss
            if (proc.cmdline() or [""])[0].startswith("ray::SessionActor"):
                actors += 1
    return {
        "actors": actors,
        "rss_mb": round(rss / 2**20, 1),
        "replica_fds": replica_process(up_pid).num_fds(),
    }


async def tab(url: str, hold: asyncio.Event | None = None) -> None:
    async with websockets.connect(url, open_timeout=20) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": ["trade:005930"]}))
        async with asyncio.timeout(20):
            while json.loads(await ws.recv())["type"] != "trade":
                pass
        if hold is not None:
            await hold.wait()


async def churn(url: str, cycles: int) -> tuple[float, int]:
    gate = asyncio.Semaphore(CONCURRENCY)
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with gate:
            try:
                await tab(url)
            except Exception:
                failures += 1

    began = time.monotonic()
    await asyncio.gather(*(one() for _ in range(cycles)))
    return time.monotonic() - began, failures


async def run(up_pid: int, port: int, cycles: int) -> dict:
    url = f"ws://127.0.0.1:{port}/ws"
    hold = asyncio.Event()
    steady = [asyncio.create_task(tab(url, hold)) for _ in range(STEADY_TABS)]
    await asyncio.sleep(20)  # the pool warm, the steady tabs streaming
    baseline = sample(up_pid)
    took, failures = await churn(url, cycles)
    samples = {0: sample(up_pid)}
    for after in (15, 30, 45, 60, 75, 90):
        await asyncio.sleep(15)
        samples[after] = sample(up_pid)
    hold.set()
    for task in steady:
        with contextlib.suppress(Exception):
            await task
    return {"baseline": baseline, "took_s": took, "failures": failures, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kisray-churn-") as tmp:
        root = Path(tmp)
        port, sim_port = free_port(), free_port()
        proc, _ = start(root, env_for(root, port, sim_port), port)
        try:
            report = asyncio.run(run(proc.pid, port, args.cycles))
        finally:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(Exception):
                proc.wait(60)
    base = report["baseline"]
    print(f"{args.cycles} cycles in {report['took_s']:.1f} s, {report['failures']} failed")
    print("when        | session actors | RSS of the stack (MB) | replica fds")
    rows = [("baseline", base), *((f"+{after} s", s) for after, s in report["samples"].items())]
    for when, s in rows:
        print(f"{when:<11} | {s['actors']:>14} | {s['rss_mb']:>21} | {s['replica_fds']:>11}")
    at60 = report["samples"][60]

    def within(key: str) -> bool:  # counts get one unit of slack: 5 % of 13 actors is 0.65
        return at60[key] <= base[key] * 1.05 + (1 if key != "rss_mb" else 0)

    result = {
        "cycles": args.cycles,
        "failures": report["failures"],
        "actors_baseline": base["actors"],
        "actors_after_60s": at60["actors"],
        "rss_mb_baseline": base["rss_mb"],
        "rss_mb_after_60s": at60["rss_mb"],
        "replica_fds_baseline": base["replica_fds"],
        "replica_fds_after_60s": at60["replica_fds"],
        "within_5pct": all(within(k) for k in ("actors", "rss_mb", "replica_fds")),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
