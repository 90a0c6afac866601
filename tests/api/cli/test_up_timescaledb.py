"""The whole stack on TimescaleDB, and the same candles from both database modes.

`kisray up` runs against a database on the session's TimescaleDB server: it migrates it, the
recorder writes the simulator's trades into it, and /candles serves its continuous aggregates.
Then the same generated 1-minute candles, loaded with `kisray load` into that database and into
the session's PostgreSQL-mode database (served by the session's Serve app), must come back from
/candles byte for byte the same, at every stored interval and a derived one, with and without
gap filling.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import polars as pl
import pytest

from engine.history.sample_data import krx_sessions, synthetic_minute_bars
from tests.api.cli.test_cli_up import KISRAY, _kisray_up, _wait_for_candles

pytestmark = [pytest.mark.slow, pytest.mark.timescale]

# Codes no other test uses.
SYMBOLS = ("900300", "900310")
INTERVALS = ("1m", "5m", "15m", "1h", "1d", "30m")  # 30m is rolled up from 15m


def _window_around_a_holiday(today: date) -> tuple[date, date]:
    """KRX sessions around the latest weekday holiday at least ten days back: recent enough
    for every retention default, old enough that no policy or live bar touches it."""
    opens = krx_sessions(today - timedelta(days=120), today)
    sessions = {(open_ + timedelta(hours=9)).date() for open_, _ in opens}  # KST dates
    day = today - timedelta(days=10)
    while day.weekday() >= 5 or day in sessions:
        day -= timedelta(days=1)
    before = sorted(s for s in sessions if s < day)[-3:]
    after = sorted(s for s in sessions if s > day)[:2]
    return before[0], after[-1]


def _generated_minutes(start: date, end: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two symbols' minutes with holes, and a late correction of some of them."""
    minutes = synthetic_minute_bars(SYMBOLS, start, end, seed=23)
    rng = np.random.default_rng(5)
    keep = rng.random(minutes.height) > 0.03  # scattered missing minutes
    first = minutes.filter(pl.col("symbol") == SYMBOLS[0])["ts"]
    block_start = first[len(first) // 2]  # and a half-hour without trades
    in_block = (pl.col("symbol") == SYMBOLS[0]) & pl.col("ts").is_between(
        block_start, block_start + timedelta(minutes=29)
    )
    holed = minutes.filter(pl.Series(keep) & ~minutes.select(in_block).to_series())
    # The correction: a few stored minutes change (more volume, the close at the high), and
    # one minute inside the half-hour hole arrives late.
    changed = holed.sample(n=5, seed=3).with_columns(
        close=pl.col("high"), volume=pl.col("volume") + 1_000
    )
    late = minutes.filter(in_block).head(1)
    return holed, pl.concat([changed, late])


def _write(frame: pl.DataFrame, path: Path) -> Path:
    frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(path)
    return path


def _load(path: Path, env: dict[str, str], database_url: str) -> str:
    done = subprocess.run(
        [KISRAY, "load", str(path)],
        env=env | {"KISRAY_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _candles(base: str, symbol: str, interval: str, fill: bool, start: date, end: date) -> bytes:
    reply = httpx.get(
        f"{base}/candles/{symbol}",
        params={
            "interval": interval,
            "from": start.isoformat(),
            "to": (end + timedelta(days=1)).isoformat(),
            "fill": str(fill).lower(),
        },
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return reply.content


async def _pause_refresh_policies(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT job_id, alter_job(job_id, scheduled => false) FROM "
            "timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        )
        return sorted(r["job_id"] for r in rows)
    finally:
        await conn.close()


def test_the_stack_on_timescaledb_serves_the_same_candles_as_on_postgres(
    tmp_path: Path,
    make_timescale_database: Callable[[], str],
    serve_url: str,
    migrated_url: str,
) -> None:
    timescale_db = make_timescale_database()
    start, end = _window_around_a_holiday(datetime.now(UTC).date())
    holed, correction = _generated_minutes(start, end)
    assert holed["ts"].dt.date().n_unique() == 5  # the holiday and the weekend have no rows
    first_file = _write(holed, tmp_path / "minutes.csv")
    late_file = _write(correction, tmp_path / "correction.csv")

    with _kisray_up(tmp_path, {"KISRAY_DATABASE_URL": timescale_db}) as (_, env, port, _sim):
        base = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{base}/health", timeout=10).json()
        assert health["database"]["mode"] == "timescaledb", health

        # The same candles, loaded the same way, into each mode; then a late correction.
        for path in (first_file, late_file):
            _load(path, env, timescale_db)
            _load(path, env, migrated_url)
        for symbol in SYMBOLS:
            for interval in INTERVALS:
                for fill in (False, True):
                    on_postgres = _candles(serve_url, symbol, interval, fill, start, end)
                    on_timescale = _candles(base, symbol, interval, fill, start, end)
                    assert on_timescale == on_postgres, (symbol, interval, fill)
                    if fill and interval == "1m" and symbol == SYMBOLS[0]:
                        assert b'"is_filled":true' in on_postgres  # the holes were filled

        # Policies that do not run: /health names every paused job, /metrics has the lag.
        paused = asyncio.run(_pause_refresh_policies(timescale_db))
        assert len(paused) == 4
        warnings = httpx.get(f"{base}/health", timeout=10).json()["warnings"]
        for job_id in paused:
            assert any(re.match(rf"timescaledb job {job_id} \(refresh market_candles_", w)
                       and " paused" in w for w in warnings), warnings  # fmt: skip
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        for interval in ("5m", "15m", "1h", "1d"):
            assert re.search(
                rf'^kisray_aggregate_lag_seconds\{{interval="{interval}"\}} \d', metrics, re.M
            ), interval

        # The live path writes into TimescaleDB and /candles serves its aggregates. Checked last:
        # the recorder writes a minute once it closes, and the work above fills that wait.
        assert _wait_for_candles(f"{base}/candles/005930?interval=5m")
        deadline = time.monotonic() + 150
        while (
            (httpx.get(f"{base}/health", timeout=10).json()["recorder"]).get("written_rows", 0) == 0
        ):
            assert time.monotonic() < deadline, "the recorder wrote nothing to TimescaleDB"
            time.sleep(2)
