"""SYNTHETIC 1-minute candles for tests, demos and benchmarks — not market data.

A random walk per symbol over the KRX sessions of the XKRX exchange calendar (holidays and late
openings included): one bar per minute of continuous trading (09:00–15:19 KST), none during the
closing call, and the closing-auction bar at 15:30 KST. Prices sit on the KRX tick grid, volumes
follow the intraday U shape. Deterministic for a given seed.

    python -m engine.history.sample_data out.parquet --symbols 005930 000660 \
        --start 2025-01-02 --days 20
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

from engine.config import DEFAULT_SYMBOLS
from engine.domain.krx import TICK_TABLE, TOP_TICK

SYNTHETIC_NOTE = "synthetic sample data (engine.history.sample_data), not market data"
CLOSING_CALL = timedelta(minutes=10)  # 15:20–15:30 KST: orders only, no trades
# The KRX tick table (engine.domain.krx) as arrays: upper bounds (exclusive) and ticks.
_TICK_BOUNDS = np.array([bound for bound, _ in TICK_TABLE])
_TICKS = np.array([tick for _, tick in TICK_TABLE] + [TOP_TICK])


def krx_sessions(start: date, end: date) -> list[tuple[datetime, datetime]]:
    """(open, close) in UTC of every XKRX session with start <= date <= end."""
    import exchange_calendars

    with warnings.catch_warnings():
        # The calendar library trips pandas deprecation warnings that are not ours to fix.
        warnings.simplefilter("ignore")
        calendar = exchange_calendars.get_calendar("XKRX")
    first = max(start, calendar.first_session.date())
    last = min(end, calendar.last_session.date())
    if first > last:
        return []
    schedule = calendar.schedule.loc[first.isoformat() : last.isoformat()]
    return [
        (o.to_pydatetime().astimezone(UTC), c.to_pydatetime().astimezone(UTC))
        for o, c in zip(schedule["open"], schedule["close"], strict=True)
    ]


def tick_sizes(prices: np.ndarray) -> np.ndarray:
    return _TICKS[np.searchsorted(_TICK_BOUNDS, prices, side="right")]


def snap_to_ticks(prices: np.ndarray) -> np.ndarray:
    ticks = tick_sizes(np.maximum(prices, 1))
    return np.maximum(ticks, np.round(prices / ticks) * ticks).astype(np.int64)


def _session_minutes(sessions: Sequence[tuple[datetime, datetime]]) -> np.ndarray:
    """Minute starts (epoch µs) of every session: continuous trading, then the closing print."""
    parts = []
    minute_us = 60_000_000
    for open_, close in sessions:
        first = int(open_.timestamp()) * 1_000_000
        last = int((close - CLOSING_CALL).timestamp()) * 1_000_000
        parts.append(np.arange(first, last, minute_us, dtype=np.int64))
        parts.append(np.array([int(close.timestamp()) * 1_000_000], dtype=np.int64))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def synthetic_minute_bars(
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    start: date = date(2025, 1, 2),
    end: date = date(2025, 1, 31),
    *,
    seed: int = 7,
) -> pl.DataFrame:
    """SYNTHETIC 1-minute candles (see the module docstring), sorted by symbol and ts.

    Columns: symbol, ts (UTC), open, high, low, close (Int64 won), volume (Int64).
    """
    minutes = _session_minutes(krx_sessions(start, end))
    if minutes.size == 0:
        return pl.DataFrame(schema=_SCHEMA)
    rng = np.random.default_rng(seed)
    frames = []
    n = minutes.size
    day = (minutes + 9 * 3_600_000_000) // 86_400_000_000
    new_day = np.ones(n, dtype=bool)
    new_day[1:] = day[1:] != day[:-1]
    minute_of_day = ((minutes // 60_000_000) + 9 * 60) % 1440 - 9 * 60  # minutes after 09:00 KST
    # U shape: busy open and close, quiet lunch.
    shape = 1.0 + 2.5 * np.exp(-minute_of_day / 25.0) + 1.5 * np.exp((minute_of_day - 390) / 30.0)
    for symbol in symbols:
        base = float(rng.choice([3_000, 15_000, 48_000, 72_000, 180_000, 420_000]))
        returns = rng.normal(0.0, 0.0011, n)
        returns[new_day] += rng.normal(0.0, 0.008, int(new_day.sum()))  # overnight gaps
        path = base * np.exp(np.cumsum(returns))
        close = snap_to_ticks(path)
        open_ = np.empty(n, dtype=np.int64)
        open_[0] = close[0]
        open_[1:] = close[:-1]
        gap_open = snap_to_ticks(path * np.exp(rng.normal(0.0, 0.0004, n)))
        open_[new_day] = gap_open[new_day]
        ticks = tick_sizes(np.maximum(open_, close))
        high = np.maximum(open_, close) + ticks * rng.geometric(0.55, n).clip(max=6) - ticks
        low = np.minimum(open_, close) - ticks * (rng.geometric(0.55, n).clip(max=6) - 1)
        low = np.maximum(low, tick_sizes(np.minimum(open_, close)))
        volume = (rng.lognormal(np.log(base**-0.5 * 4e5), 0.8, n) * shape).astype(np.int64)
        frames.append(
            pl.DataFrame(
                {
                    "symbol": pl.Series([symbol] * n, dtype=pl.String),
                    "ts": pl.Series(minutes, dtype=pl.Int64),
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                }
            )
        )
    if not frames:
        return pl.DataFrame(schema=_SCHEMA)
    out = pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    return out.cast(_SCHEMA)  # type: ignore[arg-type]


_SCHEMA: dict[str, PolarsDataType] = {
    "symbol": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "open": pl.Int64,
    "high": pl.Int64,
    "low": pl.Int64,
    "close": pl.Int64,
    "volume": pl.Int64,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Write {SYNTHETIC_NOTE} to CSV or Parquet.")
    parser.add_argument("out", type=Path, help="*.csv or *.parquet")
    parser.add_argument("--symbols", nargs="+", default=list(DEFAULT_SYMBOLS))
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 2))
    parser.add_argument("--days", type=int, default=30, help="calendar days from --start")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    frame = synthetic_minute_bars(
        args.symbols, args.start, args.start + timedelta(days=args.days - 1), seed=args.seed
    )
    if args.out.suffix == ".parquet":
        frame.write_parquet(args.out)
    else:
        frame.write_csv(args.out)
    print(f"{frame.height} rows of {SYNTHETIC_NOTE} written to {args.out}")


if __name__ == "__main__":
    main()
