"""Minute repairs end to end: the simulator's live feed through a real KisFeed into RecorderCore and
real PostgreSQL, through a dropped socket, a recorder restart, an upstream stall and a paused
symbol; after the repairs every recorded minute equals the simulator's own minute chart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx

from engine.kis.connection import ConnectionConfig
from engine.kis.feed import KisFeed
from engine.kis.registry import Registration
from engine.kis.rest import KisRestClient
from engine.kis.timeconv import kst_to_utc
from engine.kis.tr import TRADE
from engine.recorder.core import RecorderCore
from engine.sim import krx
from engine.storage.migrate import migrate
from tests.engine.conftest import running_sim

SYMBOLS = ("005930", "000660")
DAY = "20250312"  # the simulator's pinned day
CONSUMER = "recorder-test"


def chart(sim, symbol: str) -> dict[datetime, tuple]:
    plan = sim.state.market.day(symbol, DAY)
    return {
        kst_to_utc(DAY, krx.hhmmss(b.start_second)): (b.open, b.high, b.low, b.close, b.volume)
        for b in plan.bars
    }


async def stored(url: str) -> tuple[dict, dict]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT symbol, ts, open, high, low, close, volume FROM market_candles "
            "WHERE \"interval\" = '1m'"
        )
        five = await conn.fetch("SELECT symbol, ts, volume FROM market_candles_5m")
    finally:
        await conn.close()
    minutes = {
        (r["symbol"], r["ts"]): (
            int(r["open"]), int(r["high"]), int(r["low"]), int(r["close"]), r["volume"]
        )
        for r in rows
    }  # fmt: skip
    return minutes, {(r["symbol"], r["ts"]): r["volume"] for r in five}


async def test_recorded_minutes_equal_the_exchanges_after_faults_and_repairs(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = make_database()
    await migrate(url)
    spool = tmp_path / "spool"

    def core() -> RecorderCore:
        return RecorderCore(url, spool, repair_delay_s=5, stall_s=15)

    async with running_sim(speed=60, symbols=SYMBOLS, rate=10, tick_interval_s=0.05) as sim:
        feed = KisFeed(
            ConnectionConfig(sim.ws_url, sim.rest_url, "app-key", "secret", backoff_base_s=0.2)
        )
        feed.start()
        feed.register(CONSUMER)
        await feed.subscribe(CONSUMER, [Registration(TRADE, s) for s in SYMBOLS])
        kis = KisRestClient(
            sim.rest_url, "app-key", "secret", rate_per_s=5, token_cache=tmp_path / "token.json"
        )
        first = core()
        await first.start()
        recorder, repairing = first, True
        started = time.monotonic()
        done: set[str] = set()
        marked: dict[str, int] = {}
        repaired_before_restart = loaded = 0
        try:
            while (elapsed := time.monotonic() - started) < 10.5:
                batch = await feed.next_batch(CONSUMER, 0.1)
                if batch is not None:
                    recorder.add_trades(batch.records, batch.statuses)
                await recorder.flush()
                if repairing:
                    await recorder.repair(kis)
                if elapsed > 1.5 and "drop" not in done:  # ≈ a simulated minute offline
                    done.add("drop")
                    await _fault(sim, kind="drop")
                    repairing = False  # it dies before getting to these
                if elapsed > 3.5 and "restart" not in done:
                    done.add("restart")
                    marked = dict(first.suspects.marked)
                    repaired_before_restart = first.repair_stats["minutes"]
                    await first.close()  # unflushed trades die with it
                    await feed.next_batch(CONSUMER, 0.3)  # and these arrive while it is down
                    recorder = core()
                    await recorder.start()
                    loaded = len(recorder.suspects)
                    repairing = True
                if elapsed > 5.5 and "stall" not in done:
                    done.add("stall")
                    await _fault(sim, kind="stall", seconds=0.6)  # ≈ 36 simulated seconds
                if elapsed > 7.0 and "pause" not in done:
                    done.add("pause")
                    await _fault(sim, kind="pause_symbol", symbol=SYMBOLS[1], seconds=0.5)
            await recorder.flush()
            for _ in range(20):  # the last suspects fall due within a simulated second or two
                await recorder.repair(kis)
                if not recorder.suspects.due(recorder.market_now()):
                    break
                await asyncio.sleep(0.1)
            forming = {s: recorder.builder.forming_bar(s).ts for s in SYMBOLS}
            health = recorder.health()
        finally:
            await feed.stop()
            await kis.__aexit__(None, None, None)
            await recorder.close()
        want = {s: chart(sim, s) for s in SYMBOLS}

    reasons = set(marked) | set(health["repairs"]["marked"])
    assert {"start", "reconnect", "jump", "stall"} <= reasons, reasons
    assert repaired_before_restart > 0  # the start minute, before the drop
    assert loaded > 0  # the drop's minutes, pending across the restart
    assert health["repairs"]["rows_changed"] > 0  # the recorder's own minutes were wrong
    assert health["repairs"]["errors"] == 0
    got, five = await stored(url)
    for symbol in SYMBOLS:
        minutes = sorted(ts for s, ts in got if s == symbol and ts < forming[symbol])
        assert len(minutes) >= 8, minutes
        # Whole and contiguous: from the minute joined part way to the last closed one.
        assert minutes == [m for m in sorted(want[symbol]) if minutes[0] <= m <= minutes[-1]]
        mismatched = [m for m in minutes if got[(symbol, m)] != want[symbol][m]]
        assert mismatched == [], (symbol, mismatched)
    for (symbol, bucket), volume in five.items():
        inside = [
            v[4]
            for (s, ts), v in got.items()
            if s == symbol and 0 <= (ts - bucket).total_seconds() < 300
        ]
        assert volume == sum(inside), (symbol, bucket)


async def _fault(sim, **body: object) -> None:
    async with httpx.AsyncClient(base_url=sim.rest_url) as client:
        reply = await client.post("/_sim/fault", json=body)
        reply.raise_for_status()
