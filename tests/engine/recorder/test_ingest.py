"""RecorderCore against real PostgreSQL: the session's bars, restarts, and a database outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from engine.kis.records import Trade
from engine.kis.timeconv import kst_to_utc
from engine.recorder.core import RecorderCore
from engine.sim import krx
from engine.sim.market import SyntheticMarket
from engine.storage.embedded import EmbeddedPostgres
from engine.storage.migrate import migrate

DAY = "20250312"
SYMBOLS = ("005930", "000660")
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def market_trades(market: SyntheticMarket, minutes: range) -> list[Trade]:
    """The simulator's H0STCNT0 records for these session minutes, in time order."""
    out = [t for s in SYMBOLS for m in minutes for t in market.minute_trades(s, DAY, m)]
    out.sort(key=lambda t: (t.ts, t.cum_volume))
    return out


def expected(market: SyntheticMarket, minutes: range) -> dict[tuple[str, datetime], tuple]:
    plan_rows = {}
    for s in SYMBOLS:
        plan = market.day(s, DAY)
        for bar in plan.bars:
            if bar.minute in minutes:
                ts = kst_to_utc(DAY, krx.hhmmss(bar.start_second))
                plan_rows[(s, ts)] = (bar.open, bar.high, bar.low, bar.close, bar.volume)
    return plan_rows


async def stored(url: str) -> dict[tuple[str, datetime], tuple]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT symbol, ts, open, high, low, close, volume FROM market_candles "
            "WHERE \"interval\" = '1m'"
        )
        return {
            (r["symbol"], r["ts"]): (
                int(r["open"]), int(r["high"]), int(r["low"]), int(r["close"]), r["volume"]
            )
            for r in rows
        }  # fmt: skip
    finally:
        await conn.close()


async def fresh_db(make_database: Callable[[], str]) -> str:
    url = make_database()
    await migrate(url)
    return url


def chunks(trades: list[Trade], size: int) -> list[list[Trade]]:
    return [trades[i : i + size] for i in range(0, len(trades), size)]


async def test_a_session_becomes_exact_bars_and_aggregates(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = await fresh_db(make_database)
    market = SyntheticMarket(seed=3, rate=40, symbols_count=2)
    minutes = range(0, 31)
    core = RecorderCore(url, tmp_path / "spool")
    await core.start()
    for chunk in chunks(market_trades(market, minutes), 50):
        core.add_trades(chunk)
        await core.flush()
    await core.flush(until=FAR)
    await core.close()
    assert await stored(url) == expected(market, minutes)
    conn = await asyncpg.connect(url)
    try:
        five = await conn.fetch(
            "SELECT symbol, sum(volume) AS v, count(*) AS n FROM market_candles_5m GROUP BY symbol"
        )
        fifteen = await conn.fetchval("SELECT count(*) FROM market_candles_15m")
    finally:
        await conn.close()
    totals = {s: sum(b.volume for b in market.day(s, DAY).bars if b.minute < 31) for s in SYMBOLS}
    assert {r["symbol"]: r["v"] for r in five} == totals
    assert {r["n"] for r in five} == {7}  # 09:00 … 09:30
    assert fifteen == 2 * 3


async def test_a_restart_mid_session_neither_loses_nor_double_counts(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = await fresh_db(make_database)
    market = SyntheticMarket(seed=5, rate=40, symbols_count=2)
    minutes = range(0, 20)
    trades = market_trades(market, minutes)
    cut = len(trades) // 2
    first = RecorderCore(url, tmp_path / "spool")
    await first.start()
    for chunk in chunks(trades[:cut], 40):
        first.add_trades(chunk)
        await first.flush()
    first.add_trades(trades[cut : cut + 25])  # arrived, never flushed: lost in the crash
    await first.close()  # the process dies; nothing else of it survives

    second = RecorderCore(url, tmp_path / "spool")
    checkpoints = await second.start()
    assert {c.symbol for c in checkpoints} == set(SYMBOLS)
    # After reconnecting, the feed replays some of what came before, then goes on.
    for chunk in chunks(trades[cut - 60 :], 40):
        second.add_trades(chunk)
        await second.flush()
    await second.flush(until=FAR)
    await second.close()
    got = await stored(url)
    assert got == expected(market, minutes)
    for s in SYMBOLS:
        day_total = sum(v[4] for (sym, _), v in got.items() if sym == s)
        last = max(t.cum_volume for t in trades if t.symbol == s)
        assert day_total == last
    assert second.builder.duplicates + second.builder.stale > 0


async def test_a_restart_after_missed_ticks_attributes_their_volume_once(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = await fresh_db(make_database)
    market = SyntheticMarket(seed=8, rate=40, symbols_count=2)
    trades = market_trades(market, range(0, 10))
    first = RecorderCore(url, tmp_path / "spool")
    await first.start()
    first.add_trades(trades[:100])
    await first.flush()
    await first.close()
    second = RecorderCore(url, tmp_path / "spool")
    await second.start()
    second.add_trades(trades[140:])  # 40 trades happened while it was down
    await second.flush(until=FAR)
    await second.close()
    got = await stored(url)
    for s in SYMBOLS:
        last = max(t.cum_volume for t in trades if t.symbol == s)
        assert sum(v[4] for (sym, _), v in got.items() if sym == s) == last


@pytest.mark.slow
async def test_a_database_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """The recorder's own embedded server (never the shared one) is stopped for 30 s mid-run."""
    outage_s = 30.0
    server = EmbeddedPostgres(tmp_path / "pgdata")
    status = await asyncio.to_thread(server.start)
    try:
        await migrate(status.url)
        market = SyntheticMarket(seed=11, rate=40, symbols_count=2)
        minutes = range(0, 40)
        trades = market_trades(market, minutes)
        parts = chunks(trades, max(1, len(trades) // 60))
        # A small memory bound so the outage also exercises spilling to files.
        core = RecorderCore(
            status.url, tmp_path / "spool", max_spool_rows=10, retry_s=0.2, idle_close_s=3600
        )
        await core.start()
        stopped_at = None
        saw_spill = False
        for i, chunk in enumerate(parts):
            core.add_trades(chunk)
            await core.flush()
            if i == 15:
                await asyncio.to_thread(server.stop)
                stopped_at = time.monotonic()
            if stopped_at is not None and 15 < i < 45:
                await asyncio.sleep(outage_s / 29)
                saw_spill = saw_spill or core.spool.backlog().spilled_batches > 0
            if i == 45:
                assert core.health()["database"] == "unavailable"
                assert core.health()["backlog"]["batches"] > 0
                assert time.monotonic() - stopped_at >= outage_s
                status = await asyncio.to_thread(server.start)
        assert saw_spill
        deadline = time.monotonic() + 30
        while True:
            result = await core.flush(until=FAR)
            if result.backlog_batches == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert core.health()["database"] == "ok"
        assert core.health()["backlog"]["batches"] == 0
        await core.close()
        assert await stored(status.url) == expected(market, minutes)
    finally:
        await asyncio.to_thread(server.stop)
