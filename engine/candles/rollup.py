"""Roll finer candles up into a coarser interval that has no relation of its own (polars).

Exact for OHLCV: first open, max high, min low, last close, summed volume per bucket.
"""

from __future__ import annotations

import polars as pl

from engine.domain.intervals import Interval


def roll_up(candles: pl.DataFrame, interval: Interval) -> pl.DataFrame:
    """Candles (time, open, high, low, close, volume) of a finer interval → `interval` buckets."""
    if candles.height == 0:
        return candles
    step, origin = interval.seconds, interval.origin
    bucket = (pl.col("time") - (pl.col("time") - origin) % step).alias("time")
    extra = [c for c in candles.columns if c not in _OHLCV]
    return (
        candles.sort("time")
        .group_by(bucket, maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            *(pl.col(c).any() for c in extra),
        )
    )


_OHLCV = ("time", "open", "high", "low", "close", "volume")
