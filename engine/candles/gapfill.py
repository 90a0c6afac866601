"""Zero-order-hold gap filling of candles on the trading-session grid (polars, no I/O).

A bucket of the expected grid without a real candle becomes a flat candle at the previous close
(open = high = low = close, volume 0, `is_filled` true). The previous close is the last real candle
before it, or the seed (the last close before the requested range). Grid buckets before the first
known close are dropped, so nothing is invented before a symbol's first candle. Real candles are
returned unchanged, including those outside the grid (after-hours prints).
"""

from __future__ import annotations

import numpy as np
import polars as pl

CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "time": pl.Int64(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Int64(),
}
OUTPUT_COLUMNS = [*CANDLE_SCHEMA, "is_filled"]


def empty_candles() -> pl.DataFrame:
    return pl.DataFrame(schema=CANDLE_SCHEMA)


def fill_gaps(
    candles: pl.DataFrame, grid: np.ndarray, seed_close: float | None = None
) -> pl.DataFrame:
    """Real `candles` (columns of CANDLE_SCHEMA, unique `time`) filled on `grid`.

    Returns CANDLE_SCHEMA columns plus `is_filled`, ascending by time, unique times. Extra boolean
    columns of `candles` (e.g. `live`) are kept and false on filled rows.
    """
    extras = [c for c in candles.columns if c not in CANDLE_SCHEMA]
    if not _plain(candles, extras):
        return _fill_gaps_lazy(candles, grid, seed_close, extras)
    # numpy on the columns, one DataFrame at the end: every polars plan (even an eager
    # with_columns) costs a collect of a few hundred microseconds, more than the fill itself.
    real_times = candles["time"].to_numpy()
    missing = np.setdiff1d(grid, real_times, assume_unique=True)
    count = real_times.size
    if missing.size == 0 and np.all(real_times[1:] > real_times[:-1]):
        return candles.hstack([pl.Series("is_filled", np.zeros(count, dtype=bool))])
    times = np.concatenate([real_times, missing.astype(np.int64, copy=False)])
    order = np.argsort(times, kind="stable")
    is_filled = order >= count
    # Position (in time order) of the latest real candle at or before each row; -1 before any.
    positions = np.arange(order.size)
    latest = np.maximum.accumulate(np.where(is_filled, -1, positions))
    known = latest >= 0
    closes = np.concatenate([candles["close"].to_numpy(), np.zeros(missing.size)])[order]
    carry = closes[np.maximum(latest, 0)]
    if seed_close is not None:
        carry = np.where(known, carry, float(seed_close))
    else:
        order, is_filled, carry = order[known], is_filled[known], carry[known]
    columns = {"time": times[order]}
    for name in candles.columns:
        if name == "time":
            continue
        values = np.concatenate([candles[name].to_numpy(), _hole_values(name, missing.size)])
        values = values[order]
        if name in _OHLC:
            values = np.where(is_filled, carry, values)
        columns[name] = values
    columns["is_filled"] = is_filled
    return pl.DataFrame([pl.Series(name, values) for name, values in columns.items()])


def _plain(candles: pl.DataFrame, extras: list[str]) -> bool:
    """CANDLE_SCHEMA types, boolean extras and no nulls: what the numpy fill handles exactly."""
    schema = candles.schema
    return (
        all(schema[c] == t for c, t in CANDLE_SCHEMA.items())
        and all(schema[c] == pl.Boolean for c in extras)
        and not any(s.null_count() for s in candles.iter_columns())
    )


def _hole_values(name: str, size: int) -> np.ndarray:
    """Placeholder values of a column on filled rows: volume 0, extras false, prices replaced."""
    if name == "volume":
        return np.zeros(size, dtype=np.int64)
    if name in CANDLE_SCHEMA:
        return np.zeros(size, dtype=np.float64)
    return np.zeros(size, dtype=bool)


def _fill_gaps_lazy(
    candles: pl.DataFrame, grid: np.ndarray, seed_close: float | None, extras: list[str]
) -> pl.DataFrame:
    """The same fill as one polars plan, for frames with nulls or unusual column types."""
    real_times = candles["time"].to_numpy()
    missing = np.setdiff1d(grid, real_times, assume_unique=True)
    real = candles.lazy().with_columns(pl.lit(False).alias("is_filled"))
    if missing.size == 0:
        return real.sort("time").collect()
    holes = pl.LazyFrame({"time": pl.Series("time", missing, dtype=pl.Int64)}).with_columns(
        pl.lit(True).alias("is_filled")
    )
    carried = pl.col("close").forward_fill()
    if seed_close is not None:
        carried = carried.fill_null(float(seed_close))
    filled = pl.col("is_filled")
    # One lazy plan, one collect: each eager step would cost a round through the engine.
    return (
        pl.concat([real, holes], how="diagonal_relaxed")
        .sort("time")
        .with_columns(carried.alias("_carry"))
        .filter(pl.col("_carry").is_not_null())
        .with_columns(
            *(pl.when(filled).then(pl.col("_carry")).otherwise(pl.col(c)).alias(c) for c in _OHLC),
            pl.when(filled)
            .then(pl.lit(0, dtype=pl.Int64))
            .otherwise(pl.col("volume"))
            .alias("volume"),
            *(pl.col(c).fill_null(False) for c in extras),
        )
        .drop("_carry")
        .collect()
    )


_OHLC = ("open", "high", "low", "close")


def mark_unfilled(candles: pl.DataFrame) -> pl.DataFrame:
    """The `fill=false` shape: real candles only, with `is_filled` false."""
    return candles.sort("time").with_columns(pl.lit(False).alias("is_filled"))
