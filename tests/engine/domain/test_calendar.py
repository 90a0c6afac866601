"""The KRX calendar: trading days, session times, special opens, and the bucket grid."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.domain.calendar import TradingCalendar, daily_stamp, get_calendar, kst_date_of
from engine.domain.intervals import DAY, parse_interval


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def kst(*args: int) -> int:
    return utc(*args) - 9 * 3600


CAL = get_calendar()


def test_regular_session_is_0900_to_1530_kst() -> None:
    (session,) = CAL.sessions(utc(2024, 3, 6), utc(2024, 3, 7))
    assert session.day == date(2024, 3, 6)
    assert session.open == kst(2024, 3, 6, 9, 0)
    assert session.close == kst(2024, 3, 6, 15, 30)


def test_first_trading_day_of_the_year_opens_at_ten() -> None:
    (session,) = CAL.sessions(utc(2024, 1, 1), utc(2024, 1, 3) - 1)
    assert session.day == date(2024, 1, 2)  # Jan 1 is a holiday
    assert session.open == kst(2024, 1, 2, 10, 0)
    grid = CAL.bucket_grid(parse_interval("1m"), utc(2024, 1, 2), utc(2024, 1, 3))
    assert grid[0] == kst(2024, 1, 2, 10, 0)
    assert grid.size == 320 + 1  # 10:00-15:19 and the 15:30 closing print


def test_weekends_and_holidays_are_not_trading_days() -> None:
    assert CAL.is_trading_day(date(2024, 3, 6))
    assert not CAL.is_trading_day(date(2024, 3, 9))  # Saturday
    assert not CAL.is_trading_day(date(2024, 2, 9))  # Seollal
    assert not CAL.is_trading_day(date(2024, 4, 10))  # National Assembly election
    assert CAL.sessions(utc(2024, 2, 9), utc(2024, 2, 13)) == []


def test_configured_window_keeps_special_shifts() -> None:
    wide = TradingCalendar(time(8, 30), time(18, 0))
    (day,) = wide.sessions(kst(2024, 3, 6, 0, 0), kst(2024, 3, 7, 0, 0))
    assert (day.open, day.close) == (kst(2024, 3, 6, 8, 30), kst(2024, 3, 6, 18, 0))
    (first,) = wide.sessions(kst(2024, 1, 2, 0, 0), kst(2024, 1, 3, 0, 0))
    assert first.open == kst(2024, 1, 2, 9, 30)


def test_grid_counts_per_interval_for_one_regular_day() -> None:
    start, end = utc(2024, 3, 6), utc(2024, 3, 7)
    counts = {
        name: CAL.bucket_grid(parse_interval(name), start, end).size
        for name in ("1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d")
    }
    # Continuous trading 09:00-15:20 KST (00:00-06:20 UTC), the closing call without trades,
    # then the 15:30 closing print; partially covered buckets count.
    assert counts == {
        "1m": 381,
        "3m": 128,
        "5m": 77,
        "15m": 27,
        "30m": 14,
        "1h": 7,
        "4h": 2,
        "1d": 1,
    }


def test_closing_call_buckets_are_not_expected() -> None:
    grid = CAL.bucket_grid(parse_interval("5m"), kst(2024, 3, 6, 15, 0), kst(2024, 3, 6, 16, 0))
    assert grid.tolist() == [kst(2024, 3, 6, 15, m) for m in (0, 5, 10, 15, 30)]
    every_minute = TradingCalendar(closing_call_minutes=0)
    grid = every_minute.bucket_grid(parse_interval("1m"), kst(2024, 3, 6, 0), kst(2024, 3, 7, 0))
    assert grid.size == 391
    assert grid[-1] == kst(2024, 3, 6, 15, 30)


def test_daily_and_weekly_grids() -> None:
    days = CAL.bucket_grid(parse_interval("1d"), utc(2024, 2, 5), utc(2024, 2, 17))
    stamps = [datetime.fromtimestamp(int(d), UTC).date().day for d in days]
    assert stamps == [5, 6, 7, 8, 13, 14, 15, 16]  # Seollal 9-12 Feb
    weeks = CAL.bucket_grid(parse_interval("1w"), utc(2024, 2, 1), utc(2024, 2, 20))
    assert [datetime.fromtimestamp(int(w), UTC).date() for w in weeks] == [
        date(2024, 2, 5),
        date(2024, 2, 12),
        date(2024, 2, 19),
    ]


def test_daily_stamp_is_the_kst_date() -> None:
    pre_market = kst(2024, 3, 6, 8, 30)  # 23:30 UTC on 5 March
    assert kst_date_of(pre_market) == date(2024, 3, 6)
    assert daily_stamp(pre_market) == utc(2024, 3, 6)
    assert daily_stamp(kst(2024, 3, 6, 17, 59)) == utc(2024, 3, 6)


def test_buckets_before_counts_back_over_a_weekend() -> None:
    monday_open = kst(2024, 3, 11, 9, 0)
    start = CAL.buckets_before(parse_interval("1m"), monday_open + 60 * 10, 391)
    # 10 buckets on Monday, 381 on Friday: starts at Friday's open.
    assert start == kst(2024, 3, 8, 9, 0)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=utc(2015, 1, 1), max_value=utc(2026, 12, 1)),
    st.integers(min_value=1, max_value=40 * DAY),
    st.sampled_from(["1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]),
)
def test_grid_is_ascending_unique_aligned_and_inside_sessions(start: int, span: int, name: str):
    interval = parse_interval(name)
    grid = CAL.bucket_grid(interval, start, start + span)
    assert grid.dtype == np.int64
    assert np.all(np.diff(grid) > 0)
    assert np.all((grid >= start) & (grid < start + span))
    assert np.all((grid - interval.origin) % interval.seconds == 0)
    for bucket in grid[:50]:
        bucket = int(bucket)
        if interval.is_intraday:
            assert CAL.sessions(bucket, bucket + interval.seconds), "bucket outside every session"
        else:
            assert CAL.trading_days(bucket, bucket + interval.seconds).size > 0
