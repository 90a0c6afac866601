"""The simulator's market clock: KST trading time, possibly faster than real time.

By default the present is mapped into a trading session so a new user always sees a live
market: on a weekday from 09:00 until an hour before the closing call (14:20) the clock shows
the real time, otherwise a weekday and a time at least an hour before the closing call. From
there it runs at `speed`, rolling from the 15:30 closing print to 09:00 of the next weekday.
`real_hours` follows the real KRX clock (and is closed outside sessions). Tests pin `start`
and drive it with `reset`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from engine.domain.kst import KST
from engine.sim import krx

# A session is [09:00:00, 15:30:00] inclusive: the extra second is the closing print.
_SESSION_LEN = krx.CLOSE_SECOND - krx.OPEN_SECOND + 1
_CONTINUOUS_LEN = krx.CONTINUOUS_END_SECOND - krx.OPEN_SECOND
# The default clock leaves at least this much continuous trading ahead: the closing call
# (15:20–15:30) has no trades, and a stack started just before it would look dead.
LIVE_HEADROOM_S = 3600
_MAPPED_LEN = _CONTINUOUS_LEN - LIVE_HEADROOM_S


@dataclass(frozen=True, slots=True)
class SimTime:
    date: str  # KST trading date YYYYMMDD
    second: int  # second of the KST day
    is_open: bool

    @property
    def kst(self) -> datetime:
        d = krx.parse_date(self.date)
        return datetime(d.year, d.month, d.day, tzinfo=KST) + timedelta(seconds=self.second)


def map_into_session(now_kst: datetime) -> tuple[date, int]:
    """The trading (date, second) the default clock shows for a real KST instant."""
    d = now_kst.date()
    sec = now_kst.hour * 3600 + now_kst.minute * 60 + now_kst.second
    live_ahead = krx.OPEN_SECOND <= sec < krx.OPEN_SECOND + _MAPPED_LEN
    if krx.is_trading_day(d) and live_ahead:
        return d, sec
    if not krx.is_trading_day(d):
        d = krx.previous_trading_day(d)
    return d, krx.OPEN_SECOND + sec % _MAPPED_LEN


class SimClock:
    def __init__(
        self,
        *,
        speed: float = 1.0,
        real_hours: bool = False,
        start: datetime | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._wall = wall
        self.real_hours = real_hours
        self.reset(start=start, speed=speed)

    def reset(self, *, start: datetime | None = None, speed: float | None = None) -> None:
        """Re-anchor the clock: `start` is a KST (or aware) instant; None maps the present."""
        if speed is not None:
            if speed <= 0:
                raise ValueError("speed must be positive")
            self.speed = speed
        now = self._wall()
        if start is None:
            start = datetime.fromtimestamp(now, KST)
            d, sec = map_into_session(start)
        else:
            if start.tzinfo is None:
                start = start.replace(tzinfo=KST)
            start = start.astimezone(KST)
            d, sec = start.date(), start.hour * 3600 + start.minute * 60 + start.second
            if not krx.is_trading_day(d) or not krx.OPEN_SECOND <= sec <= krx.CLOSE_SECOND:
                d, sec = map_into_session(start)
        self._anchor_wall = now
        self._anchor_date = d
        self._anchor_offset = float(sec - krx.OPEN_SECOND)

    def now(self) -> SimTime:
        if self.real_hours:
            kst = datetime.fromtimestamp(self._wall(), KST)
            sec = kst.hour * 3600 + kst.minute * 60 + kst.second
            is_open = krx.is_trading_day(kst.date()) and (
                krx.OPEN_SECOND <= sec <= krx.CLOSE_SECOND
            )
            return SimTime(krx.fmt_date(kst.date()), sec, is_open)
        elapsed = self._anchor_offset + (self._wall() - self._anchor_wall) * self.speed
        days, offset = divmod(int(elapsed), _SESSION_LEN)
        d = self._anchor_date
        for _ in range(days):
            d = krx.next_trading_day(d)
        return SimTime(krx.fmt_date(d), krx.OPEN_SECOND + offset, True)

    def kst_wall(self) -> datetime:
        """Real KST wall time (PINGPONG stamps, token expiry)."""
        return datetime.fromtimestamp(self._wall(), UTC).astimezone(KST)
