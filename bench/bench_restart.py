"""Restarts on fixed ports: `kisray up` stopped with clients connected and started again at once,
and the Serve replica SIGKILLed under its clients (issue 15).

  restarts:  N rounds of start → 2 WebSocket clients subscribed + 5 HTTP requests → SIGINT →
             start again on the same KISRAY_PORT/KISRAY_SIM_PORT right after the exit. Reports
             whether each start succeeded on the first try and how long it took to /health.
  kill:      on one running stack, N rounds of SIGKILL to the `ServeReplica:` process with
             clients connected; reports the seconds until /health answers 200 again.

Each run uses an empty HOME and a fresh data directory under a temporary directory; the port
states (`ss`) are printed when a start fails, as evidence of what held the port.

Run: .venv/bin/python bench/bench_restart.py --rounds 5 --kills 3   (about 8 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import websockets

KISRAY = str(Path(sys.executable).with_name("kisray"))
BANNER = "kisray is up"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(root: Path, port: int, sim_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KISRAY_", "RAY_"))}
    (root / "home").mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(root / "home"),
        KISRAY_DATA_DIR=str(root / "data"),
        KISRAY_LOG_DIR=str(root / "logs"),
        KISRAY_PORT=str(port),
        KISRAY_SIM_PORT=str(sim_port),
    )
    return env


def port_states(*ports: int) -> str:
    """`ss` lines for these local ports: who listens, what lingers in TIME_WAIT."""
    out = subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout.splitlines()
    counts: dict[str, int] = {}
    for line in out[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[3].rsplit(":", 1)[-1] in {str(p) for p in ports}:
            key = f"{fields[3]} {fields[0]}" + (f" {fields[5]}" if len(fields) > 5 else "")
            counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{k} x{n}" for k, n in counts.items())


def start(
    root: Path, env: dict[str, str], port: int, timeout: float = 180
) -> tuple[subprocess.Popen, float]:
    """`kisray up`, once /health answers 200; raises with its log when it exits first.

    Returns after its banner too: a signal before it is an interrupted start-up (exit 130).
    """
    log_path = root / "up.log"
    banners = log_path.read_text().count(BANNER) if log_path.exists() else 0
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    began = time.monotonic()
    proc = subprocess.Popen([KISRAY, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    healthy = None
    while time.monotonic() - began < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"kisray up exited with {proc.returncode}")
        if healthy is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    healthy = time.monotonic() - began
        if healthy is not None and log_path.read_text().count(BANNER) > banners:
            return proc, healthy
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"not healthy within {timeout:.0f} s")


async def clients(port: int, hold: asyncio.Event) -> None:
    """Two subscribed WebSocket clients and a keep-alive HTTP client, open until `hold` is set."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            ws = await stack.enter_async_context(websockets.connect(f"ws://127.0.0.1:{port}/ws"))
            await ws.send(json.dumps({"op": "subscribe", "channels": ["trade:005930"]}))
            await asyncio.wait_for(ws.recv(), 10)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        for path in ("/health", "/symbols", "/candles/005930?interval=1m&limit=10", "/", "/docs"):
            await http.get(f"http://127.0.0.1:{port}{path}")
        await hold.wait()


def with_clients(port: int, action) -> object:
    """Run `action()` (blocking) while the clients are connected; return its result."""

    async def main():
        hold = asyncio.Event()
        task = asyncio.create_task(clients(port, hold))
        await asyncio.sleep(3)  # connected, subscribed, requests answered
        if task.done():
            task.result()
        try:
            return await asyncio.to_thread(action)
        finally:
            hold.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)

    return asyncio.run(main())


def replica_process(up_pid: int) -> psutil.Process:
    """The Serve replica of *this* `kisray up`: only among its descendants (its Ray head's
    workers), never another stack's on a shared machine."""
    for proc in psutil.Process(up_pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.cmdline()[:1] and "ServeReplica:" in proc.cmdline()[0]:
                return proc
    raise RuntimeError(f"no ServeReplica: process under pid {up_pid}")


def kill_and_time(port: int, up_pid: int, timeout: float = 120) -> float:
    victim = replica_process(up_pid)
    victim.kill()
    began = time.monotonic()
    victim.wait(10)
    while time.monotonic() - began < timeout:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return time.monotonic() - began
        time.sleep(0.1)
    return float("inf")


def restart(
    proc: subprocess.Popen, root: Path, env: dict[str, str], round_: int
) -> subprocess.Popen:
    """SIGINT, then `kisray up` again the moment it exited (its clients are still closing);
    retried every 2 s while it fails, to measure how long the ports stay blocked."""
    port, sim_port = int(env["KISRAY_PORT"]), int(env["KISRAY_SIM_PORT"])
    proc.send_signal(signal.SIGINT)
    proc.wait(90)
    stopped = time.monotonic()
    states = port_states(port, sim_port) or "nothing"
    print(f"round {round_}: stopped (exit {proc.returncode}); on the ports: {states}", flush=True)
    for attempt in range(1, 100):
        try:
            proc, took = start(root, env, port)
            break
        except RuntimeError as exc:
            tail = (root / "up.log").read_text().strip().splitlines()[-1:]
            print(f"round {round_}: start {attempt} FAILED ({exc}): {tail}", flush=True)
            time.sleep(2)
    print(
        f"round {round_}: start {attempt} worked, healthy after {took:.1f} s "
        f"({time.monotonic() - stopped:.1f} s after the stop)",
        flush=True,
    )
    return proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5, help="stop/start rounds")
    parser.add_argument("--kills", type=int, default=3, help="replica kills on the first stack")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kisray-restart-"))
    port, sim_port = free_port(), free_port()
    env = env_for(root, port, sim_port)
    print(f"root {root}, KISRAY_PORT {port}, KISRAY_SIM_PORT {sim_port}", flush=True)
    proc, took = start(root, env, port)
    print(f"first start: healthy after {took:.1f} s", flush=True)
    try:
        for n in range(args.kills):
            took = with_clients(port, lambda: kill_and_time(port, proc.pid))
            print(f"replica kill {n + 1}: /health 200 again after {took:.1f} s", flush=True)
            time.sleep(2)
        for n in range(args.rounds):
            proc = with_clients(port, functools.partial(restart, proc, root, env, n + 1))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(90)


if __name__ == "__main__":
    main()
