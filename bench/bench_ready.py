"""Ready means ready (issue 15): over N fresh starts of `kisray up` (empty HOME, fresh data dir),
three tabs connect the moment `/health` first answers 200 ("ok"); each must get a trade within
2 s and none may be closed.

Prints one row per start and ends with RESULT {"starts", "tabs", "tabs_with_trade_within_2s",
"tabs_closed", "first_trade_max_s", "ready_after_s_max"}.

Run: .venv/bin/python bench/bench_ready.py [--starts 5]   (about 1 minute a start)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_restart import KISRAY, env_for, free_port

TABS = 3


async def first_trade(url: str) -> float | None:
    """Seconds to the first trade; None if the socket was closed or sent an error first."""
    began = time.monotonic()
    try:
        async with websockets.connect(url, open_timeout=10) as ws:
            await ws.send(json.dumps({"op": "subscribe", "channels": ["trade:005930"]}))
            async with asyncio.timeout(10):
                while True:
                    message = json.loads(await ws.recv())
                    if message["type"] == "error":
                        return None
                    if message["type"] == "trade":
                        return time.monotonic() - began
    except (OSError, websockets.WebSocketException, TimeoutError):
        return None


def one_start(root: Path) -> dict:
    port, sim_port = free_port(), free_port()
    with open(root / "up.log", "wb") as log:
        proc = subprocess.Popen(
            [KISRAY, "up"], env=env_for(root, port, sim_port), stdout=log, stderr=subprocess.STDOUT
        )
    began = time.monotonic()
    try:
        while time.monotonic() - began < 180:
            if proc.poll() is not None:
                raise RuntimeError(f"kisray up exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        ready = time.monotonic() - began
        url = f"ws://127.0.0.1:{port}/ws"

        async def tabs() -> list[float | None]:
            return list(await asyncio.gather(*(first_trade(url) for _ in range(TABS))))

        return {"ready_after_s": round(ready, 1), "first_trades": asyncio.run(tabs())}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for n in range(args.starts):
        with tempfile.TemporaryDirectory(prefix="kisray-ready-") as tmp:
            row = one_start(Path(tmp))
        rows.append(row)
        delays = ", ".join("closed" if d is None else f"{d:.2f}" for d in row["first_trades"])
        print(f"start {n + 1}: ready after {row['ready_after_s']} s; first trades (s): {delays}")
    trades = [d for r in rows for d in r["first_trades"]]
    result = {
        "starts": len(rows),
        "tabs": len(trades),
        "tabs_with_trade_within_2s": sum(1 for d in trades if d is not None and d <= 2.0),
        "tabs_closed": sum(1 for d in trades if d is None),
        "first_trade_max_s": round(max((d for d in trades if d is not None), default=0), 2),
        "ready_after_s_max": max(r["ready_after_s"] for r in rows),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
