"""Reading candle series: one query per request to the relation that serves the interval.

Times cross this module as epoch seconds (int) and prices as float8: the chart edge wants numbers,
and converting numeric → Decimal → float per value in Python would cost more than the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

import asyncpg
import numpy as np
import polars as pl

from engine.candles.gapfill import CANDLE_SCHEMA
from engine.domain.intervals import MINUTE, RELATIONS

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool
_OHLC = ("open", "high", "low", "close")

_COLUMNS = (
    "extract(epoch FROM ts)::int8 AS time, open::float8, high::float8, low::float8, "
    "close::float8, volume::int8"
)
# Each column of the range as one bytea of big-endian 8-byte values (int8send/float8send), so
# the client decodes six buffers with numpy instead of building a Python tuple per row. All
# aggregates of one query see the rows in the same order, so the columns stay aligned.
_PACKED = (
    "string_agg(int8send(extract(epoch FROM ts)::int8), ''::bytea), "
    + ", ".join(f"string_agg(float8send({c}::float8), ''::bytea)" for c in _OHLC)
    + ", string_agg(int8send(volume::int8), ''::bytea), count(*)"
)
_SEED = (
    "SELECT extract(epoch FROM ts)::int8 AS time, close::float8 AS close FROM "
    + RELATIONS[MINUTE]
    + " WHERE symbol = $1 AND \"interval\" = '1m' AND ts < $4 ORDER BY ts DESC LIMIT 1"
)


def _range_filter(relation: str) -> str:
    minute = " AND \"interval\" = '1m'" if relation == RELATIONS[MINUTE] else ""
    return f"FROM {relation} WHERE symbol = $1{minute} AND ts >= $2 AND ts < $3"


# One fixed statement per relation (relation names are never taken from input): the range as
# packed columns, plus the last 1-minute close before $4 (primary-key probe), so a request costs
# one round trip and returns one row.
_RANGE_SQL: dict[str, str] = {
    relation: (
        f"SELECT r.*, p.time, p.close FROM (SELECT {_PACKED} {_range_filter(relation)}) AS r"
        f" LEFT JOIN ({_SEED}) AS p ON true"
    )
    for relation in RELATIONS.values()
}
# The same range as rows: the fallback should a packed column ever skip a NULL value.
_ROWS_SQL: dict[str, str] = {
    relation: f"SELECT {_COLUMNS} {_range_filter(relation)}" for relation in RELATIONS.values()
}
_LATEST_SQL = (
    "SELECT extract(epoch FROM ts)::int8 FROM market_candles "
    "WHERE symbol = $1 AND \"interval\" = '1m' ORDER BY ts DESC LIMIT 1"
)
# The stored minutes of a bucket before its forming minute, as one bar (NULLs when none).
_MINUTES_BAR_SQL = (
    "SELECT (array_agg(open ORDER BY ts))[1]::float8, max(high)::float8, min(low)::float8,"
    " (array_agg(close ORDER BY ts DESC))[1]::float8, sum(volume)::int8 FROM market_candles"
    " WHERE symbol = $1 AND \"interval\" = '1m' AND ts >= $2 AND ts < $3"
)
# Symbols from the small daily relation, then first/last minute per symbol by index probes.
_SYMBOLS_SQL = """
SELECT s.symbol, n.name,
       extract(epoch FROM f.ts)::int8 AS first, extract(epoch FROM l.ts)::int8 AS last
FROM (SELECT DISTINCT symbol FROM market_candles_1d) AS s
CROSS JOIN LATERAL (SELECT ts FROM market_candles m WHERE m.symbol = s.symbol
                    AND m."interval" = '1m' ORDER BY ts LIMIT 1) AS f
CROSS JOIN LATERAL (SELECT ts FROM market_candles m WHERE m.symbol = s.symbol
                    AND m."interval" = '1m' ORDER BY ts DESC LIMIT 1) AS l
LEFT JOIN symbols AS n ON n.symbol = s.symbol
ORDER BY s.symbol
"""


@dataclass(frozen=True, slots=True)
class PriorClose:
    """The last 1-minute close before some time: seeds the gap fill, and UDF's nextTime."""

    time: int
    close: float


@dataclass(frozen=True, slots=True)
class SymbolExtent:
    symbol: str
    name: str | None
    first: int
    last: int


def _ts(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def fetch_candles(
    db: Executor, relation: str, symbol: str, start: int, end: int, seed_before: int
) -> tuple[pl.DataFrame, PriorClose | None]:
    """Rows of `relation` for `symbol` with start <= ts < end (CANDLE_SCHEMA, ascending time),
    and the last 1-minute close before `seed_before`."""
    bounds = (_ts(start), _ts(end))
    row = await db.fetchrow(_RANGE_SQL[relation], symbol, *bounds, _ts(seed_before))
    prior = PriorClose(row[7], row[8]) if row[7] is not None else None
    count = row[6]
    if count == 0:
        return pl.DataFrame(schema=CANDLE_SCHEMA), prior
    packed = row[:6]
    if any(len(column) != 8 * count for column in packed):
        rows = await db.fetch(_ROWS_SQL[relation], symbol, *bounds)
        frame = pl.DataFrame([tuple(r) for r in rows], schema=CANDLE_SCHEMA, orient="row")
        return frame.sort("time"), prior
    columns = [
        np.frombuffer(column, dtype=">" + code).astype("=" + code)
        for column, code in zip(packed, _CODES, strict=True)
    ]
    times = columns[0]
    if times.size > 1 and not np.all(times[1:] > times[:-1]):
        order = np.argsort(times, kind="stable")
        columns = [column[order] for column in columns]
    return pl.DataFrame(
        [pl.Series(name, column) for name, column in zip(CANDLE_SCHEMA, columns, strict=True)]
    ), prior


# numpy codes of the packed columns, in CANDLE_SCHEMA order (int8, float8 × 4, int8).
_CODES = ("i8", "f8", "f8", "f8", "f8", "i8")


async def latest_minute(db: Executor, symbol: str) -> int | None:
    """Start of the symbol's newest 1-minute candle, or None if it has none."""
    return await db.fetchval(_LATEST_SQL, symbol)


async def minutes_bar(
    db: Executor, symbol: str, start: int, end: int
) -> tuple[float, float, float, float, int] | None:
    """The 1-minute candles with start <= ts < end rolled into one (open, high, low, close,
    volume), or None when there are none."""
    row = await db.fetchrow(_MINUTES_BAR_SQL, symbol, _ts(start), _ts(end))
    if row is None or row[0] is None:
        return None
    return row[0], row[1], row[2], row[3], row[4]


async def symbol_extents(db: Executor) -> list[SymbolExtent]:
    rows = await db.fetch(_SYMBOLS_SQL)
    return [SymbolExtent(r["symbol"], r["name"], r["first"], r["last"]) for r in rows]
