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

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dt_time
from pathlib import Path

import asyncpg

from engine.domain.bars import MinuteBar
from engine.errors import (
    DatabaseUnavailableError,
    InvalidCandlesError,
    KisProtocolError,
    UpstreamUnavailableError,
)
from engine.history.backfill import Backfill, store_bars
from engine.kis.records import Trade
from engine.kis.rest import KisRestClient
from engine.recorder.builder import BarBuilder, Checkpoint, TickOutcome
from engine.recorder.repair import DEFAULT_DELAY_S, DEFAULT_STALL_S, SuspectMinutes
from engine.recorder.spool import BarSpool, FlushBatch
from engine.recorder.store import load_checkpoints, write_flush
from engine.storage.migrate import DbMode, database_mode
from engine.storage.pool import CONNECTION_ERRORS, connect

logger = logging.getLogger(__name__)

CLOSE_GRACE = timedelta(seconds=5)
_DB_DOWN: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, DatabaseUnavailableError)
REPAIRS_FILE = "repairs.json"
REPAIR_RETRY_S = 30.0  # after KIS or the database refused a repair


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
        repair_delay_s: float = DEFAULT_DELAY_S,
        stall_s: float = DEFAULT_STALL_S,
        continuous_end: dt_time = dt_time(15, 20),
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
        self._market_date: str | None = None
        self._last_trade_wall = time.monotonic()
        self._changed: set[str] = set()  # symbols with trades since the last flush
        self._published: set[str] = set()  # symbols with trades since the last forming_changes
        self.db_ok = False
        self.last_error: str | None = None
        self.written_rows = 0
        self.flushes = 0
        self.started = False
        # One writer on the connection: flushes and repairs take turns.
        self._write_lock = asyncio.Lock()
        self.suspects = SuspectMinutes(
            delay_s=repair_delay_s, stall_s=stall_s, continuous_end=continuous_end
        )
        self._repairs_file = spool_dir / REPAIRS_FILE
        self._repair_after = 0.0  # monotonic; no repair before this after a failure
        self.repair_stats: Counter[str] = Counter()

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
            forming = checkpoint.forming
            minute = int(forming.ts.timestamp()) // 60 if forming is not None else None
            self.suspects.restored(checkpoint.symbol, checkpoint.trade_date, minute)
        self._load_repairs()
        self.started = True
        logger.info(
            "recorder restored %d symbol checkpoints; %d minutes to repair",
            len(checkpoints),
            len(self.suspects),
        )
        return checkpoints

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=2)
            except Exception:  # closing a connection that is already gone
                conn.terminate()

    # -- input ----------------------------------------------------------------------------------

    def add_trades(self, trades: Iterable[Trade], statuses: Sequence[str] = ()) -> int:
        """Feed trades (any other record is ignored) and the upstream status changes that came
        with them; returns how many trades were accepted."""
        if "reconnecting" in statuses:
            # Records may be missing around a reconnect: the batch's trades come after it.
            self.suspects.upstream_lost("reconnect")
        builder = self.builder
        suspects = self.suspects
        changed = self._changed
        accepted = 0
        last: Trade | None = None
        for record in trades:
            if type(record) is not Trade:
                continue
            if builder.add(record) is TickOutcome.ACCEPTED:
                accepted += 1
                changed.add(record.symbol)
                suspects.trade(
                    record.symbol, record.trade_date, record.ts, record.cum_volume, record.volume
                )
            last = record
        for jump in builder.take_jumps():
            suspects.jump(*jump)
        if last is not None:
            self._last_trade_wall = time.monotonic()
            if self._market_ts is None or last.ts > self._market_ts:
                self._market_ts = last.ts
                self._market_date = last.trade_date
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
        if bars:
            # KIS's bar of a repaired minute is final: the builder's view of it is not written.
            is_repaired = self.suspects.is_repaired
            bars = [b for b in bars if not is_repaired(b.symbol, b.ts)]
        if self.suspects.changed:
            self._save_repairs()
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
        async with self._write_lock:
            return await self._write_queue(force)

    async def _write_queue(self, force: bool) -> tuple[int, int]:
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

    # -- repairs ----------------------------------------------------------------------------------

    def market_now(self) -> datetime | None:
        """The market clock: the newest trade's time, run on by the wall time since it arrived
        (never ahead of the exchange, whatever speed a simulator runs at)."""
        if self._market_ts is None:
            return None
        return self._market_ts + timedelta(seconds=time.monotonic() - self._last_trade_wall)

    async def repair(self, kis: KisRestClient, *, now: datetime | None = None) -> int:
        """Fetch the due suspect minutes from KIS's minute chart and write them; returns how
        many minutes were settled (0 when nothing was due or it has to wait)."""
        clock = now or self.market_now()
        if not self.started or clock is None or time.monotonic() < self._repair_after:
            return 0
        due = self.suspects.due(clock)
        if not due or len(self.spool):
            return 0
        today = (
            datetime.strptime(self._market_date, "%Y%m%d").date()
            if self._market_date
            else clock.date()
        )
        job = Backfill(kis, None, today=today)
        calls = kis.calls
        bars: list[MinuteBar] = []
        try:
            for symbol, suspects in due.items():
                rows = await job.minute_rows(symbol, [s.ts for s in suspects])
                bars.extend(rows)
        except (UpstreamUnavailableError, KisProtocolError) as exc:
            self.repair_stats["errors"] += 1
            self._repair_after = time.monotonic() + REPAIR_RETRY_S
            logger.warning("recorder: minute repair postponed, KIS chart failed: %s", exc)
            return 0
        settled = [s for suspects in due.values() for s in suspects]
        async with self._write_lock:
            if len(self.spool):
                return 0  # the builder's own bars of these minutes must land first
            # Sealed before the write: a bar drained meanwhile is not written over this one.
            self.suspects.repaired(settled)
            try:
                conn = await self._connection()
                changed = await store_bars(conn, bars, self._mode or "postgres")
            except (*_DB_DOWN, asyncpg.PostgresError, InvalidCandlesError) as exc:
                self.suspects.retry(settled)
                self.repair_stats["errors"] += 1
                if isinstance(exc, _DB_DOWN):
                    await self._lost(exc)
                else:
                    self._repair_after = time.monotonic() + REPAIR_RETRY_S
                    logger.error("recorder: minute repair refused by the database: %s", exc)
                return 0
        self._save_repairs()
        reasons = Counter(s.reason for s in settled)
        self.repair_stats["batches"] += 1
        self.repair_stats["minutes"] += len(settled)
        self.repair_stats["changed"] += changed
        self.repair_stats["calls"] += kis.calls - calls
        logger.info(
            "recorder repaired %d minutes of %d symbols from the KIS minute chart "
            "(%d rows changed, %d calls; %s)",
            len(settled), len(due), changed, kis.calls - calls,
            ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())),
        )  # fmt: skip
        return len(settled)

    def _save_repairs(self) -> None:
        path = self._repairs_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.suspects.dump()))
            os.replace(tmp, path)  # a crash leaves the old file or the new one, never half
        except OSError as exc:
            logger.warning("recorder: could not save the minutes to repair: %s", exc)

    def _load_repairs(self) -> int:
        try:
            rows = json.loads(self._repairs_file.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            logger.warning("recorder: ignoring unreadable %s: %s", self._repairs_file, exc)
            return 0
        return self.suspects.load(rows)

    def repair_health(self) -> dict[str, object]:
        return {
            "pending": len(self.suspects),
            "batches": self.repair_stats["batches"],
            "minutes": self.repair_stats["minutes"],
            "rows_changed": self.repair_stats["changed"],
            "calls": self.repair_stats["calls"],
            "errors": self.repair_stats["errors"],
            "marked": dict(self.suspects.marked),
        }

    def health(self) -> dict[str, object]:
        backlog = self.spool.backlog()
        return {
            "started": self.started,
            "database": "ok" if self.db_ok else "unavailable",
            "last_error": None if self.db_ok else self.last_error,
            "backlog": backlog.as_dict(),
            "written_rows": self.written_rows,
            "symbols": len(self.builder.symbols()),
            "ticks": self.builder.stats(),
            "repairs": self.repair_health(),
        }
