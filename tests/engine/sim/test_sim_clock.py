"""The simulator's default clock always leaves a live market ahead of a new stack."""

from __future__ import annotations

from datetime import datetime

import pytest

from engine.domain.kst import KST
from engine.sim import krx
from engine.sim.clock import LIVE_HEADROOM_S, SimClock, map_into_session

WEDNESDAY = (2025, 3, 12)


def _second(hour: int, minute: int) -> int:
    return hour * 3600 + minute * 60


@pytest.mark.parametrize("hour,minute", [(9, 0), (10, 30), (14, 19)])
def test_morning_and_early_afternoon_show_the_real_time(hour: int, minute: int) -> None:
    d, sec = map_into_session(datetime(*WEDNESDAY, hour, minute, tzinfo=KST))
    assert (d.isoformat(), sec) == ("2025-03-12", _second(hour, minute))


@pytest.mark.parametrize(
    "day,hour,minute",
    [
        (WEDNESDAY, 14, 20),
        (WEDNESDAY, 15, 19),
        (WEDNESDAY, 15, 25),  # the closing call: no trades for ten minutes
        (WEDNESDAY, 15, 30),
        (WEDNESDAY, 23, 59),
        (WEDNESDAY, 3, 0),
        ((2025, 3, 15), 15, 25),  # a Saturday
    ],
)
def test_other_times_map_to_an_hour_or_more_of_continuous_trading(day, hour, minute) -> None:
    d, sec = map_into_session(datetime(*day, hour, minute, tzinfo=KST))
    assert krx.is_trading_day(d)
    assert sec >= krx.OPEN_SECOND
    assert sec + LIVE_HEADROOM_S <= krx.CONTINUOUS_END_SECOND


def test_a_pinned_start_inside_the_closing_call_is_kept() -> None:
    """Tests that pin the clock get exactly what they asked for."""
    start = datetime(*WEDNESDAY, 15, 25, tzinfo=KST)
    clock = SimClock(start=start, wall=lambda: 1_000.0)
    now = clock.now()
    assert (now.date, now.second) == ("20250312", _second(15, 25))
