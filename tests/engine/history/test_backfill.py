"""Backfill from the simulator's minute charts into real PostgreSQL: exact rows, paging within
the rate limit, the gap detector, and the `kisray backfill` command."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from engine.domain.calendar import get_calendar
from engine.domain.kst import KST
from engine.errors import InvalidRangeError
from engine.history.backfill import Backfill, day_runs, gap_days
from engine.kis.rest import KisRestClient, RateLimiter
from engine.kis.timeconv import kst_to_utc
from engine.sim import krx
from engine.storage.migrate import migrate

SYMBOL = "005930"
TODAY = date(2025, 3, 12)  # the simulator's pinned day (tests/engine/conftest.py)


def plan_rows(sim, day: str, minutes: range | None = None) -> dict:
    plan = sim.state.market.day(SYMBOL, day)
    return {
        kst_to_utc(day, krx.hhmmss(b.start_second)): (b.open, b.high, b.low, b.close, b.volume)
        for b in plan.bars
        if minutes is None or b.minute in minutes
    }


async def stored(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT ts, open, high, low, close, volume FROM candles_1m WHERE symbol = $1", SYMBOL
        )
    finally:
        await conn.close()
    return {
        r["ts"]: (int(r["open"]), int(r["high"]), int(r["low"]), int(r["close"]), r["volume"])
        for r in rows
    }


def client(sim, tmp_path: Path, rate: float = 20) -> KisRestClient:
    return KisRestClient(
        sim.rest_url, "app-key", "secret", rate_per_s=rate, token_cache=tmp_path / "token.json"
    )


async def test_backfill_stores_the_simulators_bars_exactly(
    sim_factory, make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = make_database()
    await migrate(url)
    async with sim_factory() as sim, client(sim, tmp_path) as kis:
        conn = await asyncpg.connect(url)
        try:
            done: list[str] = []
            job = Backfill(kis, conn, today=TODAY, progress=lambda day, _rows: done.append(day))
            report = await job.run(SYMBOL, date(2025, 3, 10), TODAY)
            again = await job.run(SYMBOL, date(2025, 3, 10), TODAY)
            five = await conn.fetchval(
                "SELECT sum(volume) FROM market_candles_5m WHERE symbol = $1", SYMBOL
            )
        finally:
            await conn.close()
    # 10:00 KST on the pinned day: minutes 0..59 are complete; the forming one is not stored.
    want = plan_rows(sim, "20250310") | plan_rows(sim, "20250311")
    want |= plan_rows(sim, "20250312", range(0, 60))
    got = await stored(url)
    assert got == want
    assert report.days == ("20250310", "20250311", "20250312")
    assert report.rows_fetched == len(want) and report.rows_changed == len(want)
    assert again.rows_changed == 0  # idempotent
    assert five == sum(v[4] for v in want.values())
    assert report.calls <= 2 + 2 * 4 + 1  # 30-row pages today, 120-row pages before
    assert done and done[-1] == "20250310"


async def test_paper_rate_limit_is_respected(sim_factory, tmp_path: Path) -> None:
    async with sim_factory(rest_rate_per_s=2) as sim, client(sim, tmp_path, rate=2) as kis:
        started = time.monotonic()
        pages = [await kis.past_minutes(SYMBOL, "20250311", "153000") for _ in range(5)]
        elapsed = time.monotonic() - started
    assert all(len(p.rows) == 120 for p in pages)  # no EGW00201 raised
    assert elapsed >= 2.0  # 5 calls at 2/s need at least two waits


async def test_rate_limiter_never_exceeds_its_window() -> None:
    limiter = RateLimiter(4)
    stamps = []
    for _ in range(10):
        await limiter.acquire()
        stamps.append(time.monotonic())
    for i in range(4, 10):
        assert stamps[i] - stamps[i - 4] >= 1.0


async def test_gap_detector_names_the_days_to_fetch(
    sim_factory, make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = make_database()
    await migrate(url)
    calendar = get_calendar()
    async with sim_factory() as sim, client(sim, tmp_path) as kis:
        conn = await asyncpg.connect(url)
        try:
            job = Backfill(kis, conn, today=TODAY)
            await job.run(SYMBOL, date(2025, 3, 6), date(2025, 3, 11))
            full = await stored(url)
            assert await gap_days(conn, SYMBOL, date(2025, 3, 6), date(2025, 3, 11), calendar) == []
            # The collector was down on the afternoon of the 7th and all of the 10th.
            await conn.execute(
                "DELETE FROM market_candles WHERE symbol = $1 AND ts >= $2 AND ts < $3",
                SYMBOL,
                kst_to_utc("20250307", "130000"),
                kst_to_utc("20250310", "160000"),
            )
            missing = await gap_days(conn, SYMBOL, date(2025, 3, 6), date(2025, 3, 11), calendar)
            assert missing == [date(2025, 3, 7), date(2025, 3, 10)]
            assert day_runs(missing, calendar) == [(date(2025, 3, 7), date(2025, 3, 10))]
            for lo, hi in day_runs(missing, calendar):
                await job.run(SYMBOL, lo, hi)
        finally:
            await conn.close()
    assert await stored(url) == full


async def test_a_backwards_range_is_a_typed_error(sim_factory, tmp_path: Path) -> None:
    async with sim_factory() as sim, client(sim, tmp_path) as kis:
        with pytest.raises(InvalidRangeError):
            await Backfill(kis, None, today=TODAY).run(SYMBOL, TODAY, date(2025, 3, 1))  # type: ignore[arg-type]


@pytest.mark.slow
async def test_kisray_backfill_command(
    sim_factory, make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = make_database()
    async with sim_factory() as sim:
        env = os.environ | {
            "KISRAY_DATABASE_URL": url,
            "KISRAY_DATA_DIR": str(tmp_path / "data"),
            "KISRAY_LOG_DIR": str(tmp_path / "logs"),
            "KISRAY_KIS_ENV": "sim",
            "KISRAY_KIS_REST_URL": sim.rest_url,
        }
        kisray = Path(sys.executable).with_name("kisray")
        args = ["backfill", SYMBOL, "--from", "2025-03-10", "--to", "2025-03-11"]
        proc = await asyncio.create_subprocess_exec(
            str(kisray), *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        assert "762 rows fetched" in (out + err).decode()  # the console is stderr
        gaps = await asyncio.create_subprocess_exec(
            str(kisray), *args, "--gaps", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(gaps.communicate(), 120)
        assert gaps.returncode == 0, err.decode()
        assert "no gaps" in (out + err).decode()
        bad = await asyncio.create_subprocess_exec(
            str(kisray), "backfill", SYMBOL, "--from", "2025-03-11", "--to", "2025-03-01", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(bad.communicate(), 120)
        assert bad.returncode != 0
    assert await stored(url) == plan_rows(sim, "20250310") | plan_rows(sim, "20250311")


async def _page_today(kis: KisRestClient, cursor: Callable[[str], str]) -> dict:
    """Page today's chart the way public clients do: each cursor derived from the oldest row."""
    bars, hour = {}, "153000"
    while True:
        page = await kis.today_minutes(SYMBOL, hour)
        for r in page.rows:
            bars.setdefault(r.ts, (r.open, r.high, r.low, r.close, r.volume))
        oldest = f"{page.rows[-1].ts.astimezone(KST):%H%M%S}"
        if oldest <= "090000":
            return bars
        hour = cursor(oldest)


def _minute_before(hour: str, second: str) -> str:
    minutes = int(hour[:2]) * 60 + int(hour[2:4]) - 1
    return f"{minutes // 60:02d}{minutes % 60:02d}{second}"


async def test_hhmm00_cursors_page_the_same_whole_bars_as_hhmm59(sim_factory, tmp_path) -> None:
    async with sim_factory() as sim, client(sim, tmp_path) as kis:
        at_00 = await _page_today(kis, lambda oldest: _minute_before(oldest, "00"))
        at_59 = await _page_today(kis, lambda oldest: _minute_before(oldest, "59"))
    # 10:00:00 pinned: minutes 0..59 are complete, the forming 10:00 row is left out here.
    want = plan_rows(sim, "20250312", range(0, 60))
    forming = kst_to_utc("20250312", "100000")
    assert {ts: v for ts, v in at_00.items() if ts != forming} == want
    assert at_00 == at_59


@pytest.mark.parametrize(
    "shape",
    [
        {"chart_tr_cont": False},  # no tr_cont header: paging must go on while pages are full
        {"chart_cut_at_cursor": True},  # each minute cut at the cursor's second
    ],
    ids=["no-tr_cont", "cut-at-cursor"],
)
async def test_backfill_stores_whole_bars_whatever_the_chart_shape(
    sim_factory, make_database: Callable[[], str], tmp_path: Path, shape: dict
) -> None:
    url = make_database()
    await migrate(url)
    async with sim_factory(**shape) as sim, client(sim, tmp_path) as kis:
        conn = await asyncpg.connect(url)
        try:
            await Backfill(kis, conn, today=TODAY).run(SYMBOL, date(2025, 3, 10), TODAY)
        finally:
            await conn.close()
    want = plan_rows(sim, "20250310") | plan_rows(sim, "20250311")
    want |= plan_rows(sim, "20250312", range(0, 60))
    assert await stored(url) == want
