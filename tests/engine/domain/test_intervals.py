"""Interval parsing, alignment and the relation each interval is read or derived from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.domain.intervals import (
    DAY,
    WEEK,
    parse_interval,
    parse_resolution,
    resolution_of,
)
from engine.errors import InvalidIntervalError


@pytest.mark.parametrize(
    ("text", "seconds", "relation", "derived"),
    [
        ("1m", 60, "market_candles", False),
        ("3m", 180, "market_candles", True),
        ("5m", 300, "market_candles_5m", False),
        ("10m", 600, "market_candles_5m", True),
        ("15m", 900, "market_candles_15m", False),
        ("30m", 1800, "market_candles_15m", True),
        ("45m", 2700, "market_candles_15m", True),
        ("1h", 3600, "market_candles_1h", False),
        ("60m", 3600, "market_candles_1h", False),
        ("4h", 14400, "market_candles_1h", True),
        ("1d", DAY, "market_candles_1d", False),
        ("1w", WEEK, "market_candles_1d", True),
    ],
)
def test_relation_for_each_interval(text: str, seconds: int, relation: str, derived: bool) -> None:
    interval = parse_interval(text)
    assert interval.seconds == seconds
    assert interval.relation == relation
    assert interval.is_derived is derived


@pytest.mark.parametrize(
    "text", ["", "0m", "7m", "5x", "2d", "2w", "25h", "1M", "m", "1.5m", "-1m"]
)
def test_bad_intervals_raise_invalid_interval(text: str) -> None:
    with pytest.raises(InvalidIntervalError) as info:
        parse_interval(text)
    assert info.value.code == "INVALID_INTERVAL"
    assert info.value.http_status == 400


def test_canonical_names() -> None:
    assert parse_interval("60m").name == "1h"
    assert parse_interval("240m").name == "4h"
    assert parse_interval("1440m").name == "1d"
    assert parse_interval(" 1H ").name == "1h"


@given(st.sampled_from([d for d in range(1, 1441) if 1440 % d == 0]))
def test_every_divisor_of_a_day_derives_from_a_dividing_relation(minutes: int) -> None:
    interval = parse_interval(f"{minutes}m")
    assert interval.seconds % interval.source_seconds == 0
    # The coarsest stored relation that divides it, never a finer one.
    for stored in (60, 300, 900, 3600):
        if interval.seconds % stored == 0:
            assert interval.source_seconds >= stored


@given(
    st.integers(min_value=0, max_value=4_000_000_000),
    st.sampled_from(["1m", "5m", "4h", "1d", "1w"]),
)
def test_floor_and_ceil_bracket_the_timestamp(ts: int, text: str) -> None:
    interval = parse_interval(text)
    lo, hi = interval.floor(ts), interval.ceil(ts)
    assert lo <= ts <= hi
    assert hi - lo in (0, interval.seconds)
    assert (lo - interval.origin) % interval.seconds == 0


def test_weeks_start_on_monday() -> None:
    from datetime import UTC, datetime

    wednesday = int(datetime(2024, 3, 6, 10, tzinfo=UTC).timestamp())
    start = datetime.fromtimestamp(parse_interval("1w").floor(wednesday), UTC)
    assert start == datetime(2024, 3, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("resolution", "name"),
    [
        ("1", "1m"),
        ("5", "5m"),
        ("60", "1h"),
        ("240", "4h"),
        ("D", "1d"),
        ("1D", "1d"),
        ("W", "1w"),
        ("1W", "1w"),
    ],
)
def test_tradingview_resolutions(resolution: str, name: str) -> None:
    interval = parse_resolution(resolution)
    assert interval.name == name
    assert parse_resolution(resolution_of(interval)) == interval


@pytest.mark.parametrize("resolution", ["2D", "1M", "abc", "7", ""])
def test_bad_resolutions(resolution: str) -> None:
    with pytest.raises(InvalidIntervalError):
        parse_resolution(resolution)
