"""KRX market rules the simulator needs: tick sizes (호가단위), session times, trading days."""

from __future__ import annotations

from datetime import date, timedelta

from engine.domain.krx import tick_size  # the simulator's callers use krx.tick_size

OPEN_SECOND = 9 * 3600  # 09:00:00 KST, opening auction print
CONTINUOUS_END_SECOND = 15 * 3600 + 20 * 60  # 15:20 closing call starts: no trades until 15:30
CLOSE_SECOND = 15 * 3600 + 30 * 60  # 15:30:00 KST, closing auction print
CONTINUOUS_MINUTES = 380  # 09:00 .. 15:19
CLOSE_MINUTE = 390  # minute index of the 15:30 print


def snap(price: float) -> int:
    """The nearest valid price on the tick grid (never below 1)."""
    tick = tick_size(max(1, int(price)))
    return max(tick, round(price / tick) * tick)


def tick_up(price: int, steps: int = 1) -> int:
    for _ in range(steps):
        price += tick_size(price)
    return price


def tick_down(price: int, steps: int = 1) -> int:
    for _ in range(steps):
        down = price - tick_size(price - 1)
        if down < 1:
            break
        price = down
    return price


def parse_date(yyyymmdd: str) -> date:
    return date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))


def fmt_date(d: date) -> str:
    return d.strftime("%Y%m%d")


def is_trading_day(d: date) -> bool:
    # Weekdays only; exchange holidays are not modelled by the simulator.
    return d.weekday() < 5


def previous_trading_day(d: date) -> date:
    d -= timedelta(days=1)
    while not is_trading_day(d):
        d -= timedelta(days=1)
    return d


def next_trading_day(d: date) -> date:
    d += timedelta(days=1)
    while not is_trading_day(d):
        d += timedelta(days=1)
    return d


def hhmmss(second_of_day: int) -> str:
    h, rest = divmod(second_of_day, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}{m:02d}{s:02d}"


def minute_of(second_of_day: int) -> int:
    """Session minute index (0 = 09:00) of a second of the KST day."""
    return (second_of_day - OPEN_SECOND) // 60
