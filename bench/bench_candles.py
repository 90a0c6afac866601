"""Candle API server time: the CandleActor's path (one range query + one seed probe, polars
roll-up/fill, JSON by polars) against the same filled series computed in SQL alone
(generate_series session grid + a LATERAL last close per filled bucket, json_agg), same run,
same database, same connection pool.

Loads 1 year of SYNTHETIC 1-minute candles for 20 symbols (engine.history.sample_data) into a
private embedded PostgreSQL under a temporary directory, which it removes at the end.

Run: .venv/bin/python bench/bench_candles.py [--symbols 20] [--year 2024] [--runs 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import numpy as np
import polars as pl

from engine.candles.service import ChartService, build_query
from engine.domain.calendar import get_calendar
from engine.domain.intervals import Interval, parse_interval
from engine.history.sample_data import synthetic_minute_bars
from engine.storage.embedded import EmbeddedPostgres
from engine.storage.migrate import migrate
from engine.storage.pool import create_pool

DAY = 86_400
# name → (interval, span in seconds of the requested range)
QUERIES: dict[str, tuple[str, int]] = {
    "5m x 1 week": ("5m", 7 * DAY),
    "1m x 1 day": ("1m", DAY),
    "1h x 3 months": ("1h", 91 * DAY),
    "1d x 1 year": ("1d", 365 * DAY),
}

# The SQL-only baseline. $1 symbol, $2 bucket width, $3/$4 range, $5/$6/$7 session opens,
# continuous-trading ends and closes (intraday) — or $5 the trading dates (daily).
_SQL_INTRADAY = """
WITH grid AS (
    SELECT DISTINCT b AS ts
    FROM unnest($5::timestamptz[], $6::timestamptz[], $7::timestamptz[]) AS s(o, ce, c)
    CROSS JOIN LATERAL (
        SELECT generate_series(date_bin($2::interval, s.o, 'epoch'), s.ce - interval '1 us',
                               $2::interval) AS b
        UNION ALL SELECT date_bin($2::interval, s.c, 'epoch')
    ) AS g
    WHERE b >= $3 AND b < $4
),
{body}
"""
_SQL_DAILY = """
WITH grid AS (
    SELECT d AS ts FROM unnest($5::timestamptz[]) AS d
    -- $2, $6 and $7 only keep the parameter list the same as the intraday statement's.
    WHERE d >= $3 AND d < $4
      AND $2::interval IS NOT NULL
      AND $6::timestamptz[] IS NOT NULL AND $7::timestamptz[] IS NOT NULL
),
{body}
"""
_SQL_BODY = """
real AS (
    SELECT ts, open, high, low, close, volume FROM {relation}
    WHERE symbol = $1 {minute_filter} AND ts >= $3 AND ts < $4
),
merged AS (
    SELECT coalesce(r.ts, g.ts) AS ts, r.open, r.high, r.low, r.close, r.volume
    FROM grid g FULL JOIN real r ON r.ts = g.ts
),
filled AS (
    SELECT m.ts, coalesce(m.close, p.close) AS carry, m.open, m.high, m.low, m.close, m.volume
    FROM merged m
    LEFT JOIN LATERAL (
        SELECT x.close FROM market_candles x
        WHERE m.close IS NULL AND x.symbol = $1 AND x."interval" = '1m'
          AND x.ts < m.ts - $8::interval
        ORDER BY x.ts DESC LIMIT 1
    ) AS p ON true
)
SELECT json_build_object('symbol', $1::text, 'interval', $9::text,
                         'candles', json_agg(json_build_object(
    'time', extract(epoch FROM ts)::int8,
    'open', coalesce(open, carry), 'high', coalesce(high, carry), 'low', coalesce(low, carry),
    'close', carry, 'volume', coalesce(volume, 0), 'is_filled', close IS NULL) ORDER BY ts))::text
FROM filled WHERE carry IS NOT NULL
"""


# Same buckets as engine.candles.store: UTC-aligned, the daily bar by KST date stamped 00:00 UTC.
_AGGREGATES = (
    ("market_candles_5m", "5 minutes", "0 hours"),
    ("market_candles_15m", "15 minutes", "0 hours"),
    ("market_candles_1h", "1 hour", "0 hours"),
    ("market_candles_1d", "1 day", "9 hours"),
)
_AGGREGATE_SQL = """
INSERT INTO {relation} (symbol, ts, open, high, low, close, volume)
SELECT symbol, date_bin('{width}', ts + interval '{shift}', timestamptz 'epoch'),
       (array_agg(open ORDER BY ts))[1], max(high), min(low),
       (array_agg(close ORDER BY ts DESC))[1], sum(volume)
FROM market_candles WHERE "interval" = '1m' GROUP BY 1, 2
"""


def sql_for(interval: Interval) -> str:
    relation = interval.relation
    minute_filter = "AND \"interval\" = '1m'" if relation == "market_candles" else ""
    body = _SQL_BODY.format(relation=relation, minute_filter=minute_filter)
    return (_SQL_INTRADAY if interval.is_intraday else _SQL_DAILY).format(body=body)


def ts(epoch: int | np.integer) -> datetime:
    return datetime.fromtimestamp(int(epoch), UTC)


def sql_args(calendar, interval: Interval, symbol: str, start: int, end: int) -> list:
    from datetime import timedelta

    first, last = interval.ceil(start), interval.ceil(end)
    if interval.is_intraday:
        sessions = calendar.sessions(first - DAY, last + DAY)
        call = calendar.closing_call
        grid = [
            [ts(s.open) for s in sessions],
            [ts(s.close - call) for s in sessions],
            [ts(s.close) for s in sessions],
        ]
        shift = timedelta(0)
    else:
        grid = [[ts(d) for d in calendar.bucket_grid(interval, first, last)], [], []]
        shift = timedelta(hours=9)  # a daily bar's minutes start at 00:00 KST
    return [
        symbol,
        timedelta(seconds=interval.seconds),
        ts(first),
        ts(last),
        *grid,
        shift,
        interval.name,
    ]


async def load(url: str, symbols: list[str], year: int) -> int:
    """COPY the year straight into market_candles, then fill each (empty) aggregate with one
    GROUP BY; the per-batch upsert path recomputes buckets per call and takes far longer."""
    conn = await asyncpg.connect(url)
    total = 0
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        for i, symbol in enumerate(symbols):
            bars = synthetic_minute_bars([symbol], date(year, 1, 1), date(year, 12, 31), seed=i)
            records = bars.select(
                "symbol", pl.lit("1m"), "ts", "open", "high", "low", "close", "volume"
            ).rows()
            await conn.copy_records_to_table(
                "market_candles",
                records=records,
                columns=["symbol", "interval", "ts", "open", "high", "low", "close", "volume"],
            )
            total += bars.height
        for relation, width, shift in _AGGREGATES:
            await conn.execute(_AGGREGATE_SQL.format(relation=relation, width=width, shift=shift))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return total


async def calendar_warmup(calendar, year: int) -> None:
    for y in (year - 1, year, year + 1):
        stamp = int(datetime(y, 6, 1, tzinfo=UTC).timestamp())
        calendar.sessions(stamp, stamp + DAY)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(url: str, symbols: list[str], year: int, runs: int) -> dict:
    calendar = get_calendar()
    pool = await create_pool(url, min_size=4, max_size=8)
    service = ChartService(pool, calendar, max_buckets=100_000)
    rng = random.Random(1)
    year_start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    await calendar_warmup(calendar, year)
    year_end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    results: dict[str, dict] = {}
    for name, (interval_name, span) in QUERIES.items():
        interval = parse_interval(interval_name)
        statement = sql_for(interval)
        engine_ms, sql_ms, rows = [], [], 0
        for i in range(runs + 5):  # the first 5 warm caches and are not counted
            symbol = rng.choice(symbols)
            if span < 300 * DAY:  # end just after a random trading day of the year
                days = calendar.trading_days(year_start + span, year_end - DAY)
                end = int(rng.choice(days.tolist())) + DAY
            else:
                end = year_end
            start = end - span
            query = build_query(symbol, interval_name, start, end, None, True, max_buckets=100_000)
            t0 = time.perf_counter()
            body = (await service.series(query)).to_json_bytes()
            t1 = time.perf_counter()
            args = sql_args(calendar, interval, symbol, start, end)
            t2 = time.perf_counter()
            async with pool.acquire() as conn:
                sql_body = await conn.fetchval(statement, *args)
            t3 = time.perf_counter()
            ours, theirs = json.loads(body)["candles"], json.loads(sql_body)["candles"]
            if [(c["time"], c["close"], c["is_filled"]) for c in ours] != [
                (c["time"], float(c["close"]), c["is_filled"]) for c in theirs
            ]:
                raise SystemExit(f"{name}: engine and SQL disagree for {symbol} {start}-{end}")
            if i >= 5:
                engine_ms.append((t1 - t0) * 1000)
                sql_ms.append((t3 - t2) * 1000)
                rows = len(ours)
        results[name] = {
            "rows": rows,
            "p50": statistics.median(engine_ms),
            "p99": pct(engine_ms, 0.99),
            "sql_p50": statistics.median(sql_ms),
            "sql_p99": pct(sql_ms, 0.99),
        }
    await pool.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--year", type=int, default=2024)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    symbols = [f"{100000 + 10 * i:06d}" for i in range(args.symbols)]
    with tempfile.TemporaryDirectory(prefix="kisray-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data")
        status = server.start()
        try:
            asyncio.run(migrate(status.url))
            started = time.perf_counter()
            print(f"loading {args.symbols} symbols x {args.year} (synthetic 1-minute candles)")
            loaded = asyncio.run(load(status.url, symbols, args.year))
            print(f"loaded {loaded} rows in {time.perf_counter() - started:.0f} s")
            results = asyncio.run(run(status.url, symbols, args.year, args.runs))
        finally:
            server.stop()
    header = f"{'query':<15} {'rows':>5} {'p50 ms':>8} {'p99 ms':>8} {'SQL p50':>8} {'SQL p99':>8}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<15} {r['rows']:>5} {r['p50']:>8.2f} {r['p99']:>8.2f} "
            f"{r['sql_p50']:>8.2f} {r['sql_p99']:>8.2f}"
        )
    result = {
        "p50_ms": {k: round(r["p50"], 2) for k, r in results.items()},
        "sql_p50_ms": {k: round(r["sql_p50"], 2) for k, r in results.items()},
        "p99_ms": {k: round(r["p99"], 2) for k, r in results.items()},
        "sql_p99_ms": {k: round(r["sql_p99"], 2) for k, r in results.items()},
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
