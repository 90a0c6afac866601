"""Candle storage: load rate of 1 year × 20 symbols of SYNTHETIC 1-minute candles (~1.8M rows,
COPY + upsert + same-transaction aggregate recompute), then reads of one symbol from the
aggregates (1 week of 5m, 1 year of 1d) against the same result computed by GROUP BY over the raw
1-minute rows, in the same run. Baseline for the load: a bare COPY into an unindexed table.

Runs on a private embedded PostgreSQL (PostgreSQL mode), or on KISRAY_BENCH_DATABASE_URL
(a fresh, empty database) — e.g. a TimescaleDB one.

Run: .venv/bin/python bench/bench_storage.py
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg

from engine.history.loader import load_minute_frame
from engine.history.sample_data import synthetic_minute_bars
from engine.storage.migrate import migrate
from engine.storage.pool import connect

SYMBOLS = tuple(f"{n:06d}" for n in range(100, 120))
YEAR = (date(2025, 1, 1), date(2025, 12, 31))
READ_SYMBOL = SYMBOLS[0]
WEEK = (datetime(2025, 6, 9, tzinfo=UTC), datetime(2025, 6, 16, tzinfo=UTC))  # Mon..Mon
YEAR_RANGE = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
REPEATS = 30

AGG_SQL = (
    "SELECT ts, open, high, low, close, volume FROM {rel} "
    "WHERE symbol = $1 AND ts >= $2 AND ts < $3 ORDER BY ts"
)
# The same candles straight from the 1-minute rows. $4 width, $5 shift (9 h for KST dates).
GROUPBY_SQL = """
SELECT date_bin($4::interval, ts + $5::interval, '2000-01-01 00:00+00') AS ts,
       (array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY ts DESC))[1] AS close, sum(volume)::bigint AS volume
FROM market_candles
WHERE symbol = $1 AND "interval" = '1m'
  AND ts >= $2::timestamptz - $5::interval AND ts < $3::timestamptz - $5::interval
GROUP BY 1 ORDER BY 1
"""


async def timed_ms(conn: asyncpg.Connection, sql: str, *args: object) -> tuple[float, list]:
    stmt = await conn.prepare(sql)
    rows = await stmt.fetch(*args)  # warm-up
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        rows = await stmt.fetch(*args)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), rows


async def run(url: str) -> dict[str, float]:
    started = time.perf_counter()
    frame = synthetic_minute_bars(SYMBOLS, *YEAR, seed=11)
    print(f"generated {frame.height:,} synthetic rows in {time.perf_counter() - started:.1f} s")
    report = await migrate(url)
    conn = await connect(url)
    try:
        # Baseline: the bare COPY of the same rows into a table with no keys and no aggregates.
        await conn.execute(
            "CREATE TEMP TABLE copy_baseline (symbol text, ts timestamptz, open numeric, "
            "high numeric, low numeric, close numeric, volume bigint)"
        )
        payload = frame.write_csv(include_header=False).encode()
        started = time.perf_counter()
        await conn.copy_to_table("copy_baseline", source=io.BytesIO(payload), format="csv")
        copy_rate = frame.height / (time.perf_counter() - started)
        await conn.execute("DROP TABLE copy_baseline")

        started = time.perf_counter()
        changed = await load_minute_frame(conn, frame)
        load_s = time.perf_counter() - started
        assert changed == frame.height
        await conn.execute("ANALYZE")

        read_5m, agg_5m = await timed_ms(
            conn, AGG_SQL.format(rel="market_candles_5m"), READ_SYMBOL, *WEEK
        )
        read_1d, agg_1d = await timed_ms(
            conn, AGG_SQL.format(rel="market_candles_1d"), READ_SYMBOL, *YEAR_RANGE
        )
        group_5m, raw_5m = await timed_ms(
            conn, GROUPBY_SQL, READ_SYMBOL, *WEEK, timedelta(minutes=5), timedelta(0)
        )
        group_1d, raw_1d = await timed_ms(
            conn, GROUPBY_SQL, READ_SYMBOL, *YEAR_RANGE, timedelta(days=1), timedelta(hours=9)
        )
        assert [tuple(r) for r in agg_5m] == [tuple(r) for r in raw_5m], "5m differs from raw"
        assert [tuple(r) for r in agg_1d] == [tuple(r) for r in raw_1d], "1d differs from raw"
    finally:
        await conn.close()

    load_rate = frame.height / load_s
    print(f"\ndatabase mode {report.mode}; {frame.height:,} rows, {len(SYMBOLS)} symbols, 2025")
    print(f"{'measure':<44}{'kisray':>12}{'baseline':>12}")
    print(f"{'load rows/s (upsert + aggregates | COPY)':<44}{load_rate:>12,.0f}{copy_rate:>12,.0f}")
    print(f"{'1 week of 5m, ms (aggregate | GROUP BY)':<44}{read_5m:>12.2f}{group_5m:>12.2f}")
    print(f"{'1 year of 1d, ms (aggregate | GROUP BY)':<44}{read_1d:>12.2f}{group_1d:>12.2f}")
    print(f"rows returned: 5m {len(agg_5m)}, 1d {len(agg_1d)}; load took {load_s:.1f} s")
    return {
        "load_rows_per_s": round(load_rate),
        "read_5m_week_ms": round(read_5m, 3),
        "read_1d_year_ms": round(read_1d, 3),
        "groupby_5m_week_ms": round(group_5m, 3),
        "groupby_1d_year_ms": round(group_1d, 3),
    }


def main() -> None:
    url = os.environ.get("KISRAY_BENCH_DATABASE_URL")
    if url:
        result = asyncio.run(run(url))
    else:
        from engine.storage.embedded import EmbeddedPostgres

        with tempfile.TemporaryDirectory(prefix="kisray-bench-") as tmp:
            server = EmbeddedPostgres(Path(tmp))
            try:
                result = asyncio.run(run(server.start().url))
            finally:
                server.stop()
    sys.stdout.flush()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
