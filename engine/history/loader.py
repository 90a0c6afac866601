"""`kisray load`: import 1-minute candles from CSV or Parquet.

Columns (header names, any order, extra columns ignored):
  symbol  KRX code; may be left out when `--symbol` is given (with it, other symbols are skipped)
  ts      the minute's start: ISO-8601 with an offset (`2025-03-10T09:00:00+09:00`, `...Z`),
          naive ISO-8601 meaning KST (`2025-03-10 09:00`), or epoch seconds
  open, high, low, close   prices, exact decimals (KRW integers or not)
  volume  a non-negative integer

The whole file is read and checked first: any bad row (missing value, high < low, negative volume,
unparsable or non-minute time) fails the load with its line number and nothing is written. Then
the rows go in with COPY in batches, all in one transaction, with upsert semantics (loading the same
file twice changes nothing); the aggregates are current when the load returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import polars as pl

from engine.candles.store import (
    MAX_PROBLEMS_REPORTED,
    MINUTE_COLUMNS,
    PRICE_COLUMNS,
    find_problems,
    refresh_aggregates,
    upsert_minute_bars,
)
from engine.errors import InvalidCandlesError
from engine.storage.migrate import database_mode
from engine.storage.pool import connect

logger = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 100_000
_AWARE_FORMAT = "%Y-%m-%d %H:%M:%S%.f%z"
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M")

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class LoadReport:
    path: str
    rows_read: int
    rows_changed: int
    symbols: tuple[str, ...]
    first_ts: datetime | None
    last_ts: datetime | None
    seconds: float


def _parse_time(column: pl.Expr) -> pl.Expr:
    text = (
        column.cast(pl.String)
        .str.strip_chars()
        .str.replace("T", " ", literal=True)
        .str.replace(r"Z$", "+00:00")
    )
    epoch = (
        pl.when(text.str.contains(r"^\d{9,11}$"))
        .then(text.cast(pl.Int64, strict=False) * 1_000_000)
        .cast(pl.Datetime("us", "UTC"))
    )
    aware = text.str.to_datetime(_AWARE_FORMAT, strict=False, time_zone="UTC", time_unit="us")
    naive = [
        text.str.to_datetime(fmt, strict=False, time_unit="us")
        .dt.replace_time_zone("Asia/Seoul")
        .dt.convert_time_zone("UTC")
        for fmt in _NAIVE_FORMATS
    ]
    return pl.coalesce(epoch, aware, *naive)


def _normalise_ts(frame: pl.DataFrame) -> pl.DataFrame:
    dtype = frame.schema["ts"]
    if isinstance(dtype, pl.Datetime):
        ts = pl.col("ts").cast(pl.Datetime("us", dtype.time_zone))
        if dtype.time_zone is None:
            ts = ts.dt.replace_time_zone("Asia/Seoul")  # naive means KST
        return frame.with_columns(ts.dt.convert_time_zone("UTC"))
    if dtype.is_integer():
        return frame.with_columns((pl.col("ts") * 1_000_000).cast(pl.Datetime("us", "UTC")))
    return frame.with_columns(_parse_time(pl.col("ts")).alias("ts"))


def read_minute_file(path: str | Path, symbol: str | None = None) -> pl.DataFrame:
    """Read and check a candle file; returns clean rows (UTC ts, prices as exact strings).

    Raises InvalidCandlesError naming the missing columns, or every bad row by its line number
    (CSV, the header is line 1) or row number (Parquet).
    """
    path = Path(path)
    is_csv = path.suffix.lower() != ".parquet"
    try:
        raw = pl.read_csv(path, infer_schema=False) if is_csv else pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InvalidCandlesError(f"cannot read {path}: {exc}") from exc
    raw = raw.rename({c: c.strip().lower() for c in raw.columns})
    if "symbol" not in raw.columns and symbol is not None:
        raw = raw.with_columns(pl.lit(symbol).alias("symbol"))
    missing = [c for c in MINUTE_COLUMNS if c not in raw.columns]
    if missing:
        raise InvalidCandlesError(f"{path}: missing columns: {', '.join(missing)}")
    frame = raw.select(MINUTE_COLUMNS).with_columns(
        pl.col("symbol").cast(pl.String).str.strip_chars(),
        *(pl.col(c).cast(pl.String).str.strip_chars() for c in PRICE_COLUMNS),
        pl.col("volume").cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False),
    )
    frame = _normalise_ts(frame)
    first_line = 2 if is_csv else 1
    problems = find_problems(frame)
    if problems:
        where = "line" if is_csv else "row"
        listed = [(row + first_line, why) for row, why in problems]
        shown = "\n".join(f"  {where} {n}: {why}" for n, why in listed[:20])
        more = f"\n  … and {len(listed) - 20} more" if len(listed) > 20 else ""
        raise InvalidCandlesError(
            f"{path}: {len(listed)} bad rows, nothing was loaded:\n{shown}{more}",
            tuple(listed[:MAX_PROBLEMS_REPORTED]),
        )
    if symbol is not None:
        frame = frame.filter(pl.col("symbol") == symbol)
    return frame


async def load_minute_frame(
    conn: asyncpg.Connection,
    frame: pl.DataFrame,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_progress: Progress | None = None,
) -> int:
    """Write checked rows in batches, in one transaction; aggregates current on return."""
    mode = await database_mode(conn) or "postgres"
    # Stable sort: within the file the last row of a (symbol, ts) still wins.
    frame = frame.sort("symbol", "ts", maintain_order=True)
    changed = 0
    async with conn.transaction():
        for start in range(0, frame.height, batch_rows):
            batch = frame.slice(start, batch_rows)
            changed += await upsert_minute_bars(conn, batch, mode=mode)
            if on_progress is not None:
                on_progress(min(start + batch_rows, frame.height), frame.height)
    if mode == "timescaledb" and changed and frame.height:
        # Policies only look back days; loaded history is refreshed here, after the commit.
        first, last = _ts_range(frame)
        await refresh_aggregates(conn, first, last + timedelta(minutes=1), mode=mode)
    return changed


def _ts_range(frame: pl.DataFrame) -> tuple[datetime, datetime]:
    """The first and last `ts` of a non-empty checked frame."""
    first, last = frame["ts"].min(), frame["ts"].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)  # ts is a Datetime column
    return first, last


async def load_file(
    db: str | asyncpg.Connection,
    path: str | Path,
    *,
    symbol: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_progress: Progress | None = None,
) -> LoadReport:
    started = time.perf_counter()
    # polars parsing is CPU-bound: keep it off the event loop.
    frame = await asyncio.to_thread(read_minute_file, path, symbol)
    conn = await connect(db) if isinstance(db, str) else db
    try:
        changed = await load_minute_frame(
            conn, frame, batch_rows=batch_rows, on_progress=on_progress
        )
    finally:
        if isinstance(db, str):
            await conn.close()
    first_ts, last_ts = _ts_range(frame) if frame.height else (None, None)
    report = LoadReport(
        path=str(path),
        rows_read=frame.height,
        rows_changed=changed,
        symbols=tuple(sorted(frame["symbol"].unique().to_list())),
        first_ts=first_ts,
        last_ts=last_ts,
        seconds=time.perf_counter() - started,
    )
    logger.info("loaded %s: %d rows read, %d new or changed", path, report.rows_read, changed)
    return report
