"""Reading candle series: one query per request to the relation that serves the interval.

Times cross this module as epoch seconds (int) and prices as float8: the chart edge wants numbers,
and converting numeric → Decimal → float per value in Python would cost more than the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import polars as pl

from engine.gapfill import CANDLE_SCHEMA
from engine.intervals import RELATIONS

Executor = asyncpg.Connection | asyncpg.Pool

_COLUMNS = (
    "extract(epoch FROM ts)::int8 AS time, open::float8, high::float8, low::float8, "
    "close::float8, volume::int8"
)
# One fixed statement per relation (relation names are never taken from input): the range, plus
# the last 1-minute close before $4 as one extra row with null open (primary-key probe), so a
# request costs one round trip.
_RANGE_SQL: dict[str, str] = {
    relation: (
        f"(SELECT {_COLUMNS} FROM {relation} WHERE symbol = $1"
        + (" AND \"interval\" = '1m'" if relation == "market_candles" else "")
        + " AND ts >= $2 AND ts < $3)"
        " UNION ALL (SELECT extract(epoch FROM ts)::int8, NULL, NULL, NULL, close::float8, NULL"
        " FROM market_candles WHERE symbol = $1 AND \"interval\" = '1m' AND ts < $4"
        " ORDER BY ts DESC LIMIT 1)"
    )
    for relation in RELATIONS.values()
}
_LATEST_SQL = (
    "SELECT extract(epoch FROM ts)::int8 FROM market_candles "
    "WHERE symbol = $1 AND \"interval\" = '1m' ORDER BY ts DESC LIMIT 1"
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
    """Rows of `relation` for `symbol` with start <= ts < end (CANDLE_SCHEMA, in no set order),
    and the last 1-minute close before `seed_before`."""
    rows = await db.fetch(_RANGE_SQL[relation], symbol, _ts(start), _ts(end), _ts(seed_before))
    prior = None
    for index, row in enumerate(rows):
        if row[1] is None:  # the seed row: only its time and close are set
            prior = PriorClose(row[0], row[4])
            del rows[index]
            break
    if not rows:
        return pl.DataFrame(schema=CANDLE_SCHEMA), prior
    return pl.DataFrame([tuple(r) for r in rows], schema=CANDLE_SCHEMA, orient="row"), prior


async def latest_minute(db: Executor, symbol: str) -> int | None:
    """Start of the symbol's newest 1-minute candle, or None if it has none."""
    return await db.fetchval(_LATEST_SQL, symbol)


async def symbol_extents(db: Executor) -> list[SymbolExtent]:
    rows = await db.fetch(_SYMBOLS_SQL)
    return [SymbolExtent(r["symbol"], r["name"], r["first"], r["last"]) for r in rows]
