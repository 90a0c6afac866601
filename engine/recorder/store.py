"""The recorder's writes: a flush's 1-minute bars and its checkpoints, in one transaction.

Bars go through `engine.candles.store.upsert_minute_bars` (which keeps the PostgreSQL-mode
aggregates current); checkpoints (`recorder_checkpoints`) only move forward — a replayed older flush
never takes a symbol's checkpoint back — so replaying a spooled flush is harmless."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import asyncpg

from engine.candles.store import upsert_minute_bars
from engine.domain.bars import MinuteBar
from engine.recorder.builder import Checkpoint
from engine.recorder.spool import FlushBatch
from engine.storage.migrate import DbMode

_SAVE_CHECKPOINT = """
INSERT INTO recorder_checkpoints AS c
    (symbol, trade_date, cum_volume, forming_ts, open, high, low, close, volume,
     open_cum, close_cum, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
ON CONFLICT (symbol) DO UPDATE
    SET trade_date = EXCLUDED.trade_date, cum_volume = EXCLUDED.cum_volume,
        forming_ts = EXCLUDED.forming_ts, open = EXCLUDED.open, high = EXCLUDED.high,
        low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume,
        open_cum = EXCLUDED.open_cum, close_cum = EXCLUDED.close_cum, updated_at = now()
    WHERE (EXCLUDED.trade_date, EXCLUDED.cum_volume) >= (c.trade_date, c.cum_volume)
"""


def _checkpoint_args(c: Checkpoint) -> tuple[object, ...]:
    f = c.forming
    return (
        c.symbol,
        c.trade_date,
        c.cum_volume,
        f.ts if f else None,
        f.open if f else None,
        f.high if f else None,
        f.low if f else None,
        f.close if f else None,
        f.volume if f else None,
        c.open_cum,
        c.close_cum,
    )


async def write_flush(conn: asyncpg.Connection, batch: FlushBatch, mode: DbMode | None) -> int:
    """Write one flush atomically; returns how many 1-minute rows were new or changed."""
    async with conn.transaction():
        changed = await upsert_minute_bars(conn, list(batch.bars), mode=mode) if batch.bars else 0
        if batch.checkpoints:
            await conn.executemany(
                _SAVE_CHECKPOINT, [_checkpoint_args(c) for c in batch.checkpoints]
            )
    return changed


async def load_checkpoints(
    conn: asyncpg.Connection, symbols: Sequence[str] | None = None
) -> list[Checkpoint]:
    rows = await conn.fetch(
        "SELECT * FROM recorder_checkpoints WHERE $1::text[] IS NULL OR symbol = ANY($1::text[]) "
        "ORDER BY symbol",
        list(symbols) if symbols is not None else None,
    )
    out: list[Checkpoint] = []
    for r in rows:
        forming = None
        if r["forming_ts"] is not None:
            forming = MinuteBar(
                r["symbol"],
                r["forming_ts"],
                _number(r["open"]),
                _number(r["high"]),
                _number(r["low"]),
                _number(r["close"]),
                r["volume"],
            )
        out.append(
            Checkpoint(
                r["symbol"],
                r["trade_date"],
                r["cum_volume"],
                forming,
                r["open_cum"],
                r["close_cum"],
            )
        )
    return out


# numeric comes back as Decimal; whole won prices stay ints
def _number(value: Decimal) -> Decimal | int:
    return int(value) if value == value.to_integral_value() else value
