"""The recorder's core, without Ray: trades → BarBuilder → flushes → spool → PostgreSQL.

`RecorderCore` owns the builder, the write backlog and one database connection. The Ray actor
(`actors/recorder.py`) feeds it trade batches and calls `flush` about once a second; a benchmark
or a test can drive it directly.

Start-up order makes restarts exact: first write whatever an earlier process left in the spool,
then load the checkpoints (which now include those flushes), then accept trades.

When a bar closes: when its symbol trades in a later minute, or when the market clock (the newest
trade time seen on any symbol) is `close_grace` past its end, or when no trade at all arrived for
`idle_close_s` of wall time (the session ended). A bar closed that way that still gets a late
trade is simply written again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg

from engine.bars import BarBuilder, Checkpoint, TickOutcome
from engine.db.candles import MinuteBar
from engine.db.migrate import DbMode, database_mode
from engine.db.pool import CONNECTION_ERRORS, connect
from engine.db.recorder_store import load_checkpoints, write_flush
from engine.errors import DatabaseUnavailableError, InvalidCandlesError
from engine.kis.records import Trade
from engine.spool import BarSpool, FlushBatch

logger = logging.getLogger(__name__)

CLOSE_GRACE = timedelta(seconds=5)
_DB_DOWN = (*CONNECTION_ERRORS, DatabaseUnavailableError)


@dataclass(frozen=True, slots=True)
class FlushResult:
    bars: int  # bars taken from the builder by this flush
    written_batches: int  # spooled flushes written by this call (this one and older ones)
    rows_changed: int
    backlog_batches: int  # still waiting for the database


class RecorderCore:
    def __init__(
        self,
        database_url: str,
        spool_dir: Path,
        *,
        max_spool_rows: int = 50_000,
        window: int | None = None,
        idle_close_s: float = 30.0,
        retry_s: float = 1.0,
    ) -> None:
        self._url = database_url
        self.builder = BarBuilder(window) if window else BarBuilder()
        self.spool = BarSpool(spool_dir, max_rows=max_spool_rows)
        self._conn: asyncpg.Connection | None = None
        self._mode: DbMode | None = None
        self._idle_close_s = idle_close_s
        self._retry_s = retry_s
        self._next_attempt = 0.0
        self._market_ts: datetime | None = None
        self._last_trade_wall = time.monotonic()
        self._changed: set[str] = set()  # symbols with trades since the last flush
        self._published: set[str] = set()  # symbols with trades since the last forming_changes
        self.db_ok = False
        self.last_error: str | None = None
        self.written_rows = 0
        self.flushes = 0
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, symbols: Sequence[str] | None = None) -> list[Checkpoint]:
        """Write the spool left by an earlier process, then restore the checkpoints.

        Raises DatabaseUnavailableError while the database cannot be reached (call again)."""
        await self._write_pending(force=True)
        if len(self.spool):
            raise DatabaseUnavailableError("the recorder's spool could not be written yet")
        conn = await self._connection(force=True)
        try:
            checkpoints = await load_checkpoints(conn, symbols)
        except _DB_DOWN as exc:
            await self._lost(exc)
            raise DatabaseUnavailableError(f"loading recorder checkpoints: {exc}") from exc
        for checkpoint in checkpoints:
            self.builder.restore(checkpoint)
        self.started = True
        logger.info("recorder restored %d symbol checkpoints", len(checkpoints))
        return checkpoints

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=2)
            except Exception:  # closing a connection that is already gone
                conn.terminate()

    # -- input ----------------------------------------------------------------------------------

    def add_trades(self, trades: Iterable[Trade]) -> int:
        """Feed trades (any other record is ignored); returns how many were accepted."""
        builder = self.builder
        changed = self._changed
        accepted = 0
        last: Trade | None = None
        for record in trades:
            if type(record) is not Trade:
                continue
            if builder.add(record) is TickOutcome.ACCEPTED:
                accepted += 1
                changed.add(record.symbol)
            last = record
        if last is not None:
            self._last_trade_wall = time.monotonic()
            if self._market_ts is None or last.ts > self._market_ts:
                self._market_ts = last.ts
        return accepted

    # -- output ---------------------------------------------------------------------------------

    def _close_until(self) -> datetime | None:
        if self._market_ts is None:
            return None
        if time.monotonic() - self._last_trade_wall >= self._idle_close_s:
            return self._market_ts + timedelta(minutes=1)
        return self._market_ts - CLOSE_GRACE

    async def flush(self, *, until: datetime | None = None) -> FlushResult:
        """Take the closed bars and the checkpoints of the symbols that traded, queue them as one
        flush, and write everything queued (oldest first) while the database takes it."""
        bars = self.builder.drain(until or self._close_until())
        checkpoints: list[Checkpoint] = []
        if self._changed:
            wanted = self._changed
            checkpoints = [c for c in self.builder.checkpoints() if c.symbol in wanted]
            self._published |= wanted
            self._changed = set()
        if bars or checkpoints:
            self.spool.push(FlushBatch(tuple(bars), tuple(checkpoints)))
        written, changed = await self._write_pending()
        self.flushes += 1
        if self.flushes % 60 == 0:
            self.builder.prune()
        return FlushResult(len(bars), written, changed, len(self.spool))

    def forming_changes(self) -> dict[str, MinuteBar]:
        """The forming bar of every symbol that traded since the previous call."""
        symbols, self._published = self._published | self._changed, set()
        return {s: bar for s in symbols if (bar := self.builder.forming_bar(s)) is not None}

    def forming_bars(self) -> dict[str, MinuteBar]:
        return self.builder.forming_bars()

    # -- database -------------------------------------------------------------------------------

    async def _connection(self, *, force: bool = False) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        now = time.monotonic()
        if not force and now < self._next_attempt:
            raise DatabaseUnavailableError(self.last_error or "database unavailable")
        self._next_attempt = now + self._retry_s
        try:
            conn = await connect(self._url)
            if self._mode is None:
                self._mode = await database_mode(conn) or "postgres"
        except _DB_DOWN as exc:
            await self._lost(exc)
            raise DatabaseUnavailableError(str(exc)) from exc
        self._conn = conn
        if not self.db_ok:
            logger.info("recorder: database reachable; backlog %d flushes", len(self.spool))
        self.db_ok = True
        return conn

    async def _lost(self, exc: BaseException) -> None:
        if self.db_ok or self.last_error is None:
            logger.warning("recorder: database unavailable, buffering bars (%s)", exc)
        self.db_ok = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _write_pending(self, *, force: bool = False) -> tuple[int, int]:
        written = changed = 0
        while (batch := self.spool.peek()) is not None:
            try:
                conn = await self._connection(force=force)
                changed += await write_flush(conn, batch, self._mode)
            except DatabaseUnavailableError:
                break
            except _DB_DOWN as exc:
                await self._lost(exc)
                break
            except (asyncpg.PostgresError, InvalidCandlesError) as exc:
                # The database refused this flush itself: set it aside, keep the queue moving.
                logger.error(
                    "recorder: flush rejected by the database, kept in %s: %s",
                    self.spool.reject(batch),
                    exc,
                )
            self.spool.pop()
            written += 1
            self.written_rows += len(batch.bars)
        return written, changed

    def health(self) -> dict:
        backlog = self.spool.backlog()
        return {
            "started": self.started,
            "database": "ok" if self.db_ok else "unavailable",
            "last_error": None if self.db_ok else self.last_error,
            "backlog": backlog.as_dict(),
            "written_rows": self.written_rows,
            "symbols": len(self.builder.symbols()),
            "ticks": self.builder.stats(),
        }
