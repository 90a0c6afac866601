"""Repair and seed 1-minute candles from KIS's own minute charts.

Today's bars come from FHKST03010200 (≤ 30 rows a call), past days' from FHKST03010230 (≤ 120
rows a call); both page backwards from the newest bar. Every page is upserted through
`upsert_minute_bars`, so a backfill is idempotent and the PostgreSQL-mode aggregates follow
(TimescaleDB: the continuous aggregates are refreshed over the range at the end).

The newest row of a backfill that reaches the present is not stored: it is the minute still
forming (and, until its first trade, KIS shows it with the previous minute's volume). The recorder
writes that bar when it closes.

Repairs. `minute_rows` fetches just the minutes the recorder names (engine/recorder/repair.py) with
cursors at the last second of the newest minute wanted, and `store_bars` writes them the same
way, so a repaired minute is exactly KIS's bar and the aggregates follow.

Paging. Each next cursor is the oldest row's own HHMM00 and the row at the cursor, already
stored whole from the page before, is dropped. So whether KIS cuts the minute at the cursor's
second or not (undocumented; public clients page with HHMM00 cursors) no completed minute is
ever stored partial, at the cost of one repeated row a page. Paging goes on while a page is full
or says `tr_cont` M/F (whether KIS sets tr_cont on these charts is unconfirmed), and stops at
09:00, on an empty page, or when the cursor stops moving.

`gap_days` is the gap detector: trading days (KRX calendar) in a range whose stored 1-minute rows
are fewer than the session's expected minutes; `--gaps` backfills just those.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

from engine.candles.store import refresh_aggregates, upsert_minute_bars
from engine.config import Settings
from engine.domain.bars import MinuteBar
from engine.domain.calendar import TradingCalendar, get_calendar
from engine.domain.intervals import parse_interval
from engine.domain.kst import KST
from engine.errors import InvalidRangeError
from engine.kis.rest import ChartPage, KisRestClient
from engine.storage.migrate import DbMode, database_mode
from engine.storage.pool import connect

logger = logging.getLogger(__name__)

OPEN_HOUR = "090000"
CLOSE_HOUR = "153000"
MAX_RANGE_DAYS = 400  # KIS keeps about a year of minute bars

Progress = Callable[[str, int], None]  # (trade date just finished, rows so far)


@dataclass(frozen=True, slots=True)
class BackfillReport:
    symbol: str
    first: date
    last: date
    rows_fetched: int
    rows_changed: int
    calls: int
    days: tuple[str, ...]  # trade dates that returned rows, oldest first


def kst_today(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(KST).date()


def _fmt(d: date) -> str:
    return d.strftime("%Y%m%d")


def _kst_day(bar: MinuteBar) -> str:
    """The bar's trading date as KIS writes it (YYYYMMDD, KST)."""
    return f"{bar.ts.astimezone(KST):%Y%m%d}"


def _kst_time(bar: MinuteBar) -> str:
    """The bar's start as KIS writes it (HHMMSS, KST)."""
    return f"{bar.ts.astimezone(KST):%H%M%S}"


async def store_bars(
    conn: asyncpg.Connection, bars: list[MinuteBar], mode: DbMode, *, refresh: bool = True
) -> int:
    """Upsert chart bars (the PostgreSQL-mode aggregates follow in the same transaction); with
    `refresh`, TimescaleDB's continuous aggregates are refreshed over the bars' span, since
    their policies look back only so far. Returns how many 1-minute rows were new or changed."""
    if not bars:
        return 0
    changed = await upsert_minute_bars(conn, bars, mode=mode)
    if refresh and mode == "timescaledb":
        first, last = min(b.ts for b in bars), max(b.ts for b in bars)
        await refresh_aggregates(conn, first, last + timedelta(minutes=1), mode=mode)
    return changed


class Backfill:
    """Pages the minute charts of one symbol into the database (`conn` may be None for
    `minute_rows`, which only fetches)."""

    def __init__(
        self,
        kis: KisRestClient,
        conn: asyncpg.Connection | None,
        *,
        today: date | None = None,
        progress: Progress | None = None,
    ) -> None:
        self._kis = kis
        self._conn = conn
        self._today = today or kst_today()
        self._progress = progress or (lambda _day, _rows: None)

    async def run(self, symbol: str, first: date, last: date) -> BackfillReport:
        if last < first:
            raise InvalidRangeError(f"backfill range ends before it starts: {first} > {last}")
        if (last - first).days > MAX_RANGE_DAYS:
            raise InvalidRangeError(f"backfill range longer than {MAX_RANGE_DAYS} days")
        if self._conn is None:
            raise RuntimeError("Backfill.run needs a database connection")
        calls_before = self._kis.calls
        mode = await database_mode(self._conn) or "postgres"
        fetched = changed = 0
        days: set[str] = set()
        lo, hi = _fmt(first), _fmt(last)
        oldest_ts = newest_ts = None
        async for rows in self._pages(symbol, first, last):
            rows = [r for r in rows if lo <= _kst_day(r) <= hi]
            if not rows:
                continue
            fetched += len(rows)
            changed += await store_bars(self._conn, rows, mode, refresh=False)
            days.update(_kst_day(r) for r in rows)
            oldest_ts = min(oldest_ts or rows[-1].ts, rows[-1].ts)
            newest_ts = max(newest_ts or rows[0].ts, rows[0].ts)
            self._progress(_kst_day(rows[-1]), fetched)
        if mode == "timescaledb" and oldest_ts is not None and newest_ts is not None:
            await refresh_aggregates(
                self._conn, oldest_ts, newest_ts + timedelta(minutes=1), mode=mode
            )
        report = BackfillReport(
            symbol, first, last, fetched, changed, self._kis.calls - calls_before,
            tuple(sorted(days)),
        )  # fmt: skip
        logger.info(
            "backfill %s %s..%s: %d rows fetched, %d new or changed, %d calls",
            symbol, first, last, fetched, changed, report.calls,
        )  # fmt: skip
        return report

    async def minute_rows(self, symbol: str, minutes: Iterable[datetime]) -> list[MinuteBar]:
        """The chart rows of exactly these completed minutes (UTC starts), newest first.

        Each call's cursor is the last second of the newest minute still wanted, so that minute
        is whole under either cursor reading, and every minute a page reaches is settled: its
        row, or no row (no trades). Today's minutes come from FHKST03010200, others from
        FHKST03010230. A few scattered minutes cost one call each; a run of them one per page.
        """
        wanted = sorted(set(minutes), reverse=True)
        out: list[MinuteBar] = []
        while wanted:
            cursor = wanted[0].astimezone(KST)
            hour = cursor.strftime("%H%M") + "59"
            if cursor.date() >= self._today:
                page = await self._kis.today_minutes(symbol, hour)
            else:
                page = await self._kis.past_minutes(symbol, _fmt(cursor.date()), hour)
            rows = [r for r in page.rows if r.ts <= wanted[0]]
            if not rows:
                break  # nothing at or before the cursor: KIS has no older rows to give
            want = set(wanted)
            out.extend(r for r in rows if r.ts in want)
            oldest = rows[-1].ts
            if not (page.full or page.more) and cursor.date() >= self._today:
                oldest = datetime.min.replace(tzinfo=UTC)  # the whole day up to the cursor
            wanted = [m for m in wanted if m < oldest]
        return out

    async def _pages(self, symbol: str, first: date, last: date):
        """Rows newest first, page by page, from `last` back to `first`."""
        if last >= self._today:
            skip_forming = True
            async for rows in self._today_pages(symbol):
                if skip_forming and rows:
                    rows, skip_forming = rows[1:], False
                yield rows
        day = min(last, self._today - timedelta(days=1))
        hour = CLOSE_HOUR
        newest: datetime | None = None  # the bar start rows must be older than
        while day >= first:
            page = await self._kis.past_minutes(symbol, _fmt(day), hour)
            rows = [r for r in page.rows if newest is None or r.ts < newest]
            if not rows:
                if page.rows:
                    break  # the cursor did not move: stop rather than loop
                day, hour, newest = day - timedelta(days=1), CLOSE_HOUR, None  # a holiday
                continue
            yield rows
            oldest = rows[-1]
            oldest_day = oldest.ts.astimezone(KST).date()
            if _kst_time(oldest) <= OPEN_HOUR:
                day, hour, newest = oldest_day - timedelta(days=1), CLOSE_HOUR, None
            else:
                day, hour, newest = oldest_day, _kst_time(oldest), oldest.ts
            if not (page.more or page.full):
                break

    async def _today_pages(self, symbol: str):
        hour, newest = CLOSE_HOUR, None
        while True:
            page: ChartPage = await self._kis.today_minutes(symbol, hour)
            rows = [r for r in page.rows if newest is None or r.ts < newest]
            if not rows:
                return
            yield rows
            hour, newest = _kst_time(rows[-1]), rows[-1].ts
            if hour <= OPEN_HOUR or not (page.more or page.full):
                return


async def gap_days(
    conn: asyncpg.Connection,
    symbol: str,
    first: date,
    last: date,
    calendar: TradingCalendar,
) -> list[date]:
    """Trading days in [first, last] with fewer stored 1-minute rows than expected minutes."""
    start = int(datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp())
    end = int(datetime(last.year, last.month, last.day, tzinfo=UTC).timestamp()) + 86_400
    sessions = calendar.sessions(start, end)
    if not sessions:
        return []
    minute = parse_interval("1m")
    rows = await conn.fetch(
        "SELECT ((ts AT TIME ZONE 'UTC') + interval '9 hours')::date AS day, count(*) AS n "
        "FROM market_candles WHERE symbol = $1 AND \"interval\" = '1m' "
        "AND ts >= $2 AND ts < $3 GROUP BY 1",
        symbol,
        datetime.fromtimestamp(sessions[0].open, UTC),
        datetime.fromtimestamp(sessions[-1].close + 60, UTC),
    )
    stored = {r["day"]: r["n"] for r in rows}
    missing: list[date] = []
    for session in sessions:
        expected = calendar.bucket_grid(minute, session.open, session.close + 60).size
        if stored.get(session.day, 0) < expected:
            missing.append(session.day)
    return missing


def day_runs(days: list[date], calendar: TradingCalendar) -> list[tuple[date, date]]:
    """Consecutive trading days grouped into (first, last) ranges."""
    runs: list[tuple[date, date]] = []
    for d in sorted(days):
        if runs:
            prev_first, prev_last = runs[-1]
            between = [
                x
                for x in (prev_last + timedelta(days=i) for i in range(1, (d - prev_last).days))
                if calendar.is_trading_day(x)
            ]
            if not between:
                runs[-1] = (prev_first, d)
                continue
        runs.append((d, d))
    return runs


async def backfill_symbol(
    settings: Settings,
    database_url: str,
    symbol: str,
    first: date,
    last: date,
    *,
    gaps: bool = False,
    today: date | None = None,
    progress: Progress | None = None,
    kis: KisRestClient | None = None,
) -> list[BackfillReport]:
    """Backfill one symbol over [first, last] (with `gaps`, only the days the gap detector
    names), with the REST client and rate limit the settings describe."""
    client = kis or KisRestClient.from_settings(settings)
    conn = await connect(database_url)
    try:
        ranges = [(first, last)]
        if gaps:
            calendar = get_calendar(
                settings.session_open, settings.session_close, settings.closing_call_minutes
            )
            missing = await gap_days(conn, symbol, first, last, calendar)
            ranges = day_runs(missing, calendar)
            logger.info("backfill %s: %d gap days in %d ranges", symbol, len(missing), len(ranges))
        job = Backfill(client, conn, today=today, progress=progress)
        return [await job.run(symbol, lo, hi) for lo, hi in reversed(ranges)]
    finally:
        await conn.close()
        if kis is None:
            await client.__aexit__(None, None, None)


async def seed_history(
    settings: Settings,
    database_url: str,
    rest_url: str,
    *,
    days: int,
    timeout_s: float = 30.0,
) -> list[BackfillReport]:
    """`kisray up` (local profile): a few trading days of demo history for every configured
    symbol, from the simulator through the same backfill path; gives up after `timeout_s`."""
    from engine.kis.rest import SIM_CREDENTIALS

    today = kst_today()
    # The simulator may show another weekday than today's date: reach a little either side.
    first, last = today - timedelta(days=days * 7 // 5 + 3), today + timedelta(days=7)
    reports: list[BackfillReport] = []

    async def run() -> None:
        async with KisRestClient(
            rest_url, *SIM_CREDENTIALS, token_cache=settings.data_dir / "kis-token.json"
        ) as kis:
            for symbol in settings.symbols:
                reports.extend(
                    await backfill_symbol(
                        settings, database_url, symbol, first, last, today=today, kis=kis
                    )
                )

    try:
        await asyncio.wait_for(run(), timeout_s)
    except TimeoutError:
        logger.warning(
            "demo history: stopped after %.0f s (%d symbols done)", timeout_s, len(reports)
        )
    return reports
