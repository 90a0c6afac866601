"""The Recorder on the session's Ray cluster, fed by a real simulator at 60x through a KisFeed
actor, writing to real PostgreSQL: the session's bars, the aggregates, a kill and restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
import ray

from actors.recorder import Recorder
from engine.kis.timeconv import kst_to_utc
from engine.sim import krx
from engine.storage.migrate import migrate
from tests.actors.recorder_support import feed_actor
from tests.engine.conftest import running_sim

SYMBOLS = ("005930", "000660")
DAY = "20250312"  # the simulator's pinned day


async def wait_ready(handle, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await handle.ready.remote():
                return
        except ray.exceptions.RayActorError:
            pass  # restarting
        await asyncio.sleep(0.3)
    raise AssertionError("recorder not ready in time")


async def stored(url: str) -> dict[str, dict[datetime, tuple]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT symbol, ts, open, high, low, close, volume FROM candles_1m ORDER BY ts"
        )
        five = await conn.fetch("SELECT symbol, ts, volume FROM market_candles_5m")
    finally:
        await conn.close()
    out: dict[str, dict[datetime, tuple]] = {s: {} for s in SYMBOLS}
    for r in rows:
        prices = (int(r[k]) for k in ("open", "high", "low", "close"))
        out[r["symbol"]][r["ts"]] = (*prices, r["volume"])
    return out, {(r["symbol"], r["ts"]): r["volume"] for r in five}


def plan(sim, symbol: str) -> dict[datetime, tuple]:
    day = sim.state.market.day(symbol, DAY)
    return {
        kst_to_utc(DAY, krx.hhmmss(b.start_second)): (b.open, b.high, b.low, b.close, b.volume)
        for b in day.bars
    }


@pytest.mark.slow
async def test_recorder_records_the_session_and_survives_being_killed(
    ray_cluster, make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = make_database()
    await migrate(url)
    tag = uuid.uuid4().hex[:8]
    async with running_sim(speed=60, symbols=SYMBOLS, rate=10, tick_interval_s=0.05) as sim:
        feed = feed_actor(f"kis-socket-{tag}", sim.ws_url, sim.rest_url)
        recorder = Recorder.options(name=f"recorder-{tag}", namespace="kisray").remote(
            url,
            SYMBOLS,
            socket_name=f"kis-socket-{tag}",
            consumer_id=f"recorder-{tag}",
            candle_actor_name=None,
            state_dir=str(tmp_path / "recorder"),
            rest_url=sim.rest_url,
        )
        try:
            await wait_ready(recorder)
            await asyncio.sleep(6)  # six simulated minutes
            before = await recorder.health.remote()
            ray.kill(recorder, no_restart=False)  # the process dies; Ray starts a new one
            await wait_ready(recorder)
            await asyncio.sleep(6)
            health = await recorder.health.remote()
            for _ in range(50):  # a flush or a repair may be under way: let it land
                if health["backlog"]["batches"] == 0 and health["repairs"]["pending"] == 0:
                    break
                await asyncio.sleep(0.2)
                health = await recorder.health.remote()
            seq, published = await recorder.forming_updates.remote(0, 2.0)
            forming = await recorder.forming_bars.remote()
        finally:
            ray.kill(feed)
            ray.kill(recorder, no_restart=True)
        expected = {s: plan(sim, s) for s in SYMBOLS}
    assert health["uptime_s"] < before["uptime_s"] + 6  # it did restart
    assert health["database"] == "ok" and health["backlog"]["batches"] == 0
    assert seq > 0 and set(published) == set(SYMBOLS) and set(forming) == set(SYMBOLS)
    got, five = await stored(url)
    assert health["repairs"]["minutes"] > 0 and health["repairs"]["errors"] == 0
    for symbol in SYMBOLS:
        minutes = sorted(got[symbol])
        assert len(minutes) >= 8, minutes
        # The minute joined half way and those around the kill were repaired from the chart.
        want = expected[symbol]
        differing = [m for m in minutes if got[symbol][m] != want[m]]
        assert differing == [], (symbol, differing)
    for (symbol, bucket), volume in five.items():
        inside = [v[4] for ts, v in got[symbol].items() if 0 <= (ts - bucket).total_seconds() < 300]
        assert volume == sum(inside)
