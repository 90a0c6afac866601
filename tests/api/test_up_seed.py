"""`kisray up` (local profile) seeds demo history from the simulator through the backfill path
and runs the recorder, without delaying /health."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.api.test_cli_up import KISRAY, _env, _wait_healthy
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def test_up_seeds_a_few_days_of_history(tmp_path: Path) -> None:
    port, sim_port = free_port(), free_port()
    env = _env(tmp_path, port, sim_port) | {
        "KISRAY_SYMBOLS": "005930,000660",
        "KISRAY_SEED_HISTORY_DAYS": "2",
    }
    proc = subprocess.Popen(
        [KISRAY, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        took = _wait_healthy(f"{base}/health", proc, timeout=90)
        health = httpx.get(f"{base}/health", timeout=5).json()
        assert "recorder" in health
        deadline = time.monotonic() + 60
        days: list = []
        while time.monotonic() < deadline:
            reply = httpx.get(f"{base}/candles/000660?interval=1d&fill=false", timeout=10)
            if reply.status_code == 200:
                days = reply.json()["candles"]
                if len(days) >= 2:
                    break
            time.sleep(1)
        assert len(days) >= 2, days
        minutes = httpx.get(f"{base}/candles/005930?interval=1m&limit=200", timeout=10).json()
        assert len(minutes["candles"]) == 200
        assert took < 60
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
