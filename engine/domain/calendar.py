"""The KRX trading calendar: trading days, session times, and the expected bucket grid.

Trading days and special opens (the year's first trading day opens at 10:00 KST) come from the
XKRX calendar of `exchange_calendars`. The session window is configurable (09:00–15:30 KST by
default); a special day keeps the calendar's shift relative to its regular hours, so a late open
of one hour moves a configured 09:00 open to 10:00 too.

Minutes with trades: continuous trading from the open until the closing call auction starts
(10 minutes before the close by default), then the closing-auction print in the close's own
minute. The closing call itself has no trades, so its buckets are not expected (not filled);
set the call to 0 minutes to expect every minute from open through the closing print.

Sessions are computed once per year and kept as numpy arrays of epoch seconds, so listing the
buckets of a range costs a few array operations.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Any

import numpy as np

from engine.domain.intervals import DAY, Interval
from engine.domain.kst import KST_OFFSET_S

REGULAR_OPEN = time(9, 0)
REGULAR_CLOSE = time(15, 30)
CLOSING_CALL_MINUTES = 10
MINUTE = 60
CALENDAR_NAME = "XKRX"
# Grids kept for repeated requests (a chart reloading the same range): at most this many, each
# of at most _GRID_CACHE_BUCKETS buckets (16 KB), so the cache stays under 4 MB.
_GRID_CACHE_SIZE = 256
_GRID_CACHE_BUCKETS = 2048


@dataclass(frozen=True, slots=True)
class Session:
    """One trading day: its date and its open/close as epoch seconds (UTC)."""

    day: date
    open: int
    close: int


@dataclass(frozen=True, slots=True)
class _YearSessions:
    days: np.ndarray  # int64: epoch second of 00:00 UTC of each trading date
    opens: np.ndarray  # int64 epoch seconds
    closes: np.ndarray  # int64 epoch seconds


def _kst_seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


@lru_cache(maxsize=1)
def _xkrx() -> Any:  # an exchange_calendars.ExchangeCalendar (the package ships no types)
    import exchange_calendars

    return exchange_calendars.get_calendar(CALENDAR_NAME)


class TradingCalendar:
    """KRX sessions in a configurable daily window, cached per year."""

    def __init__(
        self,
        session_open: time = REGULAR_OPEN,
        session_close: time = REGULAR_CLOSE,
        closing_call_minutes: int = CLOSING_CALL_MINUTES,
    ):
        length = _kst_seconds(session_close) - _kst_seconds(session_open)
        if length <= 0:
            raise ValueError("session close must be after session open")
        if not 0 <= closing_call_minutes * MINUTE < length:
            raise ValueError("closing call must be shorter than the session")
        self.closing_call = closing_call_minutes * MINUTE
        self.session_open = session_open
        self.session_close = session_close
        self._years: dict[int, _YearSessions] = {}
        self._lock = threading.Lock()
        self._grids: dict[tuple[Interval, int, int], np.ndarray] = {}

    # -- per-year cache -------------------------------------------------------------------------
    def _year(self, year: int) -> _YearSessions:
        cached = self._years.get(year)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._years.get(year)
            if cached is None:
                cached = self._build_year(year)
                self._years[year] = cached
        return cached

    def _build_year(self, year: int) -> _YearSessions:
        with warnings.catch_warnings():
            # exchange_calendars still uses a pandas API that pandas 3 deprecates; not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._compute_year(year)

    def _compute_year(self, year: int) -> _YearSessions:
        cal = _xkrx()
        first, last = cal.first_session.date(), cal.last_session.date()
        start, end = max(date(year, 1, 1), first), min(date(year, 12, 31), last)
        if start > end:
            empty = np.empty(0, dtype=np.int64)
            return _YearSessions(empty, empty, empty)
        schedule = cal.schedule.loc[start.isoformat() : end.isoformat()]
        days = schedule.index.values.astype("datetime64[s]").astype(np.int64)
        cal_opens = _epoch_seconds(schedule["open"])
        cal_closes = _epoch_seconds(schedule["close"])
        # Shift of each day against the calendar's regular hours (e.g. +1 h on the first day).
        open_shift = (cal_opens - days) - (_kst_seconds(REGULAR_OPEN) - KST_OFFSET_S)
        close_shift = (cal_closes - days) - (_kst_seconds(REGULAR_CLOSE) - KST_OFFSET_S)
        opens = days + (_kst_seconds(self.session_open) - KST_OFFSET_S) + open_shift
        closes = days + (_kst_seconds(self.session_close) - KST_OFFSET_S) + close_shift
        return _YearSessions(days, opens.astype(np.int64), closes.astype(np.int64))

    def _range(self, start: int, end: int) -> _YearSessions:
        """Sessions whose [open, close) overlaps [start, end) (epoch seconds)."""
        if end <= start:
            empty = np.empty(0, dtype=np.int64)
            return _YearSessions(empty, empty, empty)
        # A KST session can begin the previous UTC day when the window opens before 09:00 KST.
        first_year = _utc_year(start - DAY)
        last_year = _utc_year(end + DAY)
        parts = [self._year(y) for y in range(first_year, last_year + 1)]
        days = np.concatenate([p.days for p in parts])
        opens = np.concatenate([p.opens for p in parts])
        closes = np.concatenate([p.closes for p in parts])
        # The closing print's minute [close, close + 1 min) belongs to the session too.
        mask = (opens < end) & (closes + MINUTE > start)
        return _YearSessions(days[mask], opens[mask], closes[mask])

    # -- public queries -------------------------------------------------------------------------
    def sessions(self, start: int, end: int) -> list[Session]:
        found = self._range(start, end)
        return [
            Session(_utc_date(int(d)), int(o), int(c))
            for d, o, c in zip(found.days, found.opens, found.closes, strict=True)
        ]

    def is_trading_day(self, day: date) -> bool:
        stamp = _day_epoch(day)
        return bool(np.isin(stamp, self._year(day.year).days))

    def trading_days(self, start: int, end: int) -> np.ndarray:
        """Epoch seconds of 00:00 UTC of each trading date whose date lies in [start, end)."""
        first_year, last_year = _utc_year(start), _utc_year(max(start, end - 1))
        days = np.concatenate([self._year(y).days for y in range(first_year, last_year + 1)])
        return days[(days >= start) & (days < end)]

    def bucket_grid(self, interval: Interval, start: int, end: int) -> np.ndarray:
        """Expected bucket starts (int64 epoch seconds, ascending) with start in [start, end).

        Intraday: every bucket that overlaps a session's trading minutes, i.e. continuous trading
        [open, close - closing call) or the closing print's minute. Daily: each trading date.
        Weekly: each Monday-stamped week that holds at least one trading date.
        The array is read-only (small grids are cached per (interval, start, end)).
        """
        key = (interval, start, end)
        grid = self._grids.get(key)
        if grid is None:
            if len(self._grids) >= _GRID_CACHE_SIZE:
                self._grids.clear()
            grid = self._bucket_grid(interval, start, end)
            grid.flags.writeable = False
            if grid.size <= _GRID_CACHE_BUCKETS:
                self._grids[key] = grid
        return grid

    def _bucket_grid(self, interval: Interval, start: int, end: int) -> np.ndarray:
        if end <= start:
            return np.empty(0, dtype=np.int64)
        step = interval.seconds
        if not interval.is_intraday:
            # A bucket starting in [start, end) may hold trading days up to a week later.
            days = self.trading_days(interval.floor(start), end + step)
            buckets = np.unique(days - (days - interval.origin) % step)
            return buckets[(buckets >= start) & (buckets < end)]
        sessions = self._range(interval.floor(start), end)
        if sessions.opens.size == 0:
            return np.empty(0, dtype=np.int64)
        continuous_end = sessions.closes - self.closing_call
        buckets = np.unique(
            np.concatenate(
                [
                    _runs(sessions.opens, continuous_end, step),
                    _runs(sessions.closes, sessions.closes + MINUTE, step),
                ]
            )
        )
        return buckets[(buckets >= start) & (buckets < end)]

    def buckets_before(self, interval: Interval, end: int, count: int) -> int:
        """Start of the `count`-th expected bucket before `end` (the earliest of the last `count`).

        Looks back in widening windows; returns the earliest bucket found if fewer exist.
        """
        span = max(count * interval.seconds * 2, 7 * DAY)
        earliest_year = _xkrx().first_session.year
        while True:
            start = end - span
            grid = self.bucket_grid(interval, start, end)
            if grid.size >= count:
                return int(grid[-count])
            if _utc_year(start) < earliest_year:
                return int(grid[0]) if grid.size else start
            span *= 2


def _runs(starts: np.ndarray, ends: np.ndarray, step: int) -> np.ndarray:
    """Starts of the step-aligned buckets overlapping each [start, end), without a Python loop."""
    first = starts - starts % step
    counts = np.maximum((ends - first + step - 1) // step, 0)
    total = int(counts.sum())
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    runs: np.ndarray = np.repeat(first, counts) + offsets * step
    return runs


def _epoch_seconds(column: Any) -> np.ndarray:  # a pandas Series of aware timestamps
    seconds: np.ndarray = column.dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    return seconds.astype(np.int64)


def _utc_year(ts: int) -> int:
    return datetime.fromtimestamp(ts, UTC).year


def _utc_date(ts: int) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def _day_epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def kst_date_of(ts: int) -> date:
    """The KST calendar date of an epoch second."""
    return datetime.fromtimestamp(ts + KST_OFFSET_S, UTC).date()


def daily_stamp(ts: int) -> int:
    """00:00 UTC of the KST date holding `ts`: the stamp of its daily bar."""
    return (ts + KST_OFFSET_S) // DAY * DAY


@lru_cache(maxsize=8)
def get_calendar(
    session_open: time = REGULAR_OPEN,
    session_close: time = REGULAR_CLOSE,
    closing_call_minutes: int = CLOSING_CALL_MINUTES,
) -> TradingCalendar:
    """A shared calendar per session window (the per-year caches are kept across requests)."""
    return TradingCalendar(session_open, session_close, closing_call_minutes)


__all__ = [
    "Session",
    "TradingCalendar",
    "daily_stamp",
    "get_calendar",
    "kst_date_of",
]
