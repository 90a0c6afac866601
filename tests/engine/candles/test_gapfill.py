"""Zero-order-hold filling on the session grid, and the roll-up of derived intervals."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.candles.gapfill import CANDLE_SCHEMA, empty_candles, fill_gaps
from engine.candles.rollup import roll_up
from engine.domain.calendar import get_calendar
from engine.domain.intervals import parse_interval

CAL = get_calendar()


def kst(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) - 9 * 3600


def candles(rows: list[tuple[int, float, float, float, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CANDLE_SCHEMA, orient="row")


def test_hole_inside_a_session_is_flat_at_previous_close() -> None:
    t0 = kst(2024, 3, 6, 10, 0)
    real = candles([(t0, 100, 105, 99, 104, 10), (t0 + 240, 104, 106, 103, 105, 7)])
    grid = CAL.bucket_grid(parse_interval("1m"), t0, t0 + 300)
    out = fill_gaps(real, grid, seed_close=None)
    assert out["time"].to_list() == [t0 + 60 * i for i in range(5)]
    assert out["is_filled"].to_list() == [False, True, True, True, False]
    filled = out.filter(pl.col("is_filled"))
    for col in ("open", "high", "low", "close"):
        assert filled[col].to_list() == [104.0] * 3
    assert filled["volume"].to_list() == [0, 0, 0]


def test_nothing_is_filled_over_night_weekend_or_holiday() -> None:
    friday_close = kst(2024, 2, 8, 15, 30)  # Thursday before Seollal (9-12 Feb)
    next_open = kst(2024, 2, 13, 9, 0)
    real = candles([(friday_close, 1, 1, 1, 1, 1), (next_open, 2, 2, 2, 2, 1)])
    grid = CAL.bucket_grid(parse_interval("1m"), friday_close, next_open + 60)
    out = fill_gaps(real, grid)
    assert out["time"].to_list() == [friday_close, next_open]
    assert not out["is_filled"].any()


def test_seed_fills_leading_buckets_and_no_seed_drops_them() -> None:
    t0 = kst(2024, 3, 6, 9, 0)
    real = candles([(t0 + 120, 50, 51, 49, 50, 3)])
    grid = CAL.bucket_grid(parse_interval("1m"), t0, t0 + 180)
    seeded = fill_gaps(real, grid, seed_close=48.0)
    assert seeded["time"].to_list() == [t0, t0 + 60, t0 + 120]
    assert seeded["close"].to_list() == [48.0, 48.0, 50.0]
    unseeded = fill_gaps(real, grid, seed_close=None)
    assert unseeded["time"].to_list() == [t0 + 120]


def test_after_hours_candles_are_kept_and_carried() -> None:
    after = kst(2024, 3, 6, 16, 10)
    next_open = kst(2024, 3, 7, 9, 0)
    real = candles([(after, 70, 70, 70, 70, 5)])
    grid = CAL.bucket_grid(parse_interval("1m"), after, next_open + 120)
    out = fill_gaps(real, grid)
    assert out["time"].to_list() == [after, next_open, next_open + 60]
    assert out["close"].to_list() == [70.0, 70.0, 70.0]
    assert out["is_filled"].to_list() == [False, True, True]


def test_no_data_at_all_gives_no_rows() -> None:
    grid = CAL.bucket_grid(parse_interval("5m"), kst(2024, 3, 6, 9), kst(2024, 3, 6, 12))
    assert fill_gaps(empty_candles(), grid).height == 0
    assert fill_gaps(empty_candles(), grid, seed_close=10.0).height == grid.size


def test_roll_up_is_exact_ohlcv() -> None:
    t0 = kst(2024, 3, 6, 9, 0)
    real = candles(
        [
            (t0, 10, 12, 9, 11, 1),
            (t0 + 60, 11, 15, 10, 14, 2),
            (t0 + 120, 14, 14, 8, 9, 3),
            (t0 + 180, 9, 10, 9, 10, 4),
        ]
    )
    out = roll_up(real, parse_interval("3m"))
    assert out.rows() == [(t0, 10.0, 15.0, 8.0, 9.0, 6), (t0 + 180, 9.0, 10.0, 9.0, 10.0, 4)]


def test_roll_up_weeks_from_days() -> None:
    monday = kst(2024, 3, 4, 9) - kst(2024, 3, 4, 9) % 86400
    days = candles([(monday + i * 86400, 10 + i, 20 + i, 5, 11 + i, 100) for i in range(5)])
    out = roll_up(days, parse_interval("1w"))
    assert out.rows() == [(monday, 10.0, 24.0, 5.0, 15.0, 500)]


@st.composite
def random_series(draw):
    name = draw(st.sampled_from(["1m", "5m", "15m", "1h", "1d"]))
    interval = parse_interval(name)
    start = draw(st.integers(kst(2023, 12, 20), kst(2024, 3, 1)))
    span = draw(st.integers(1, 12)) * 86400
    grid = CAL.bucket_grid(interval, start, start + span)
    # Real candles: a random subset of the grid plus a few off-grid (after-hours) buckets.
    keep = draw(st.lists(st.booleans(), min_size=grid.size, max_size=grid.size))
    times = set(grid[np.array(keep, dtype=bool)].tolist()) if grid.size else set()
    if interval.is_intraday:
        extra = draw(st.lists(st.integers(0, span // interval.seconds), max_size=3))
        times |= {interval.ceil(start) + k * interval.seconds for k in extra}
    times = {t for t in times if start <= t < start + span}
    rows = []
    for t in sorted(times):
        o, c = draw(st.integers(1, 10**6)), draw(st.integers(1, 10**6))
        rows.append((t, o, max(o, c) + 1, min(o, c), c, draw(st.integers(1, 10**7))))
    seed = draw(st.none() | st.integers(1, 10**6).map(float))
    return grid, candles(rows), seed


@settings(max_examples=150, deadline=None)
@given(random_series())
def test_fill_properties(case) -> None:
    grid, real, seed = case
    out = fill_gaps(real, grid, seed_close=seed)
    times = out["time"].to_numpy()
    assert np.all(np.diff(times) > 0), "ascending and unique"
    real_times = set(real["time"].to_list())
    grid_set = set(grid.tolist())
    assert all(t in grid_set or t in real_times for t in times.tolist()), "on the grid or real"
    # Every real candle is present and unchanged.
    joined = real.join(out, on="time", how="left", suffix="_out")
    for col in ("open", "high", "low", "close", "volume"):
        assert joined[col].to_list() == joined[f"{col}_out"].to_list()
    assert not joined["is_filled"].any()
    # Filled rows: flat at the close just before them, volume 0, nothing before the first close.
    prev_close = seed
    for row in out.iter_rows(named=True):
        if row["is_filled"]:
            assert prev_close is not None
            assert row["open"] == row["high"] == row["low"] == row["close"] == prev_close
            assert row["volume"] == 0
        prev_close = row["close"]
    # Every grid bucket after the first known close is present.
    first_known = (
        grid.min()
        if (seed is not None and grid.size)
        else (min(real_times) if real_times else None)
    )
    if first_known is not None:
        assert {t for t in grid_set if t >= first_known} <= set(times.tolist())
