"""Which recorded minutes may be incomplete, and when each may be repaired from KIS's chart.

The recorder sees KIS's trades, not KIS's bars: whatever it did not receive is missing from its
minutes (the volume of missed trades lands in the minute of the trade that reveals it, and the
missed prices are gone). `SuspectMinutes` names those minutes per symbol:

- **start**: the first trade of a symbol in this process, unless it is the day's first trade
  (ACML_VOL == CNTG_VOL): the recorder joined that minute part way. After a restart, the restored
  checkpoint's forming minute and every minute up to the symbol's next trade.
- **reconnect**: the upstream said "reconnecting": each symbol's last minute at once, and the
  minutes up to its next trade when data flows again.
- **stall**: no trade of any symbol for more than `stall_s` of continuous trading (market time;
  the closing call's silence is not a stall): the same as a reconnect.
- **jump**: an ACML_VOL step larger than the trade's CNTG_VOL (trades never received) — the
  minutes from the trade below the step to the trade above it (reported by the BarBuilder).

A minute is due `delay_s` after it ends, on the market clock, so KIS's chart shows it whole.
A repaired minute is remembered and not marked again: KIS's bar of a past minute is final.
Pure Python and no I/O besides (de)serialising itself; `engine/recorder/core.py` drives it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

from engine.kis.timeconv import kst_to_utc

REASONS = ("start", "reconnect", "stall", "jump")
DEFAULT_DELAY_S = 10.0
DEFAULT_STALL_S = 15.0
_KEEP_REPAIRED_MIN = 2 * 24 * 60  # forget repaired minutes after two days


@dataclass(frozen=True, slots=True)
class Suspect:
    symbol: str
    trade_date: str  # KST YYYYMMDD
    minute: int  # epoch minute: the bar's UTC start // 60
    reason: str

    @property
    def ts(self) -> datetime:
        return datetime.fromtimestamp(self.minute * 60, UTC)

    def as_list(self) -> list[object]:
        return [self.symbol, self.trade_date, self.minute, self.reason]


class SuspectMinutes:
    """Minutes to repair, per symbol. Feed it accepted trades, jumps and upstream losses."""

    def __init__(
        self,
        *,
        delay_s: float = DEFAULT_DELAY_S,
        stall_s: float = DEFAULT_STALL_S,
        continuous_end: time = time(15, 20),
    ) -> None:
        self.delay_s = delay_s
        self.stall_s = stall_s
        self._continuous_end = continuous_end.strftime("%H%M%S")
        self._pending: dict[tuple[str, int], Suspect] = {}
        self._repaired: set[tuple[str, int]] = set()
        self._last: dict[str, tuple[str, int]] = {}  # symbol → (trade date, minute) of its newest
        self._open: dict[str, str] = {}  # symbol → reason of a gap its next trade closes
        self._seen: set[str] = set()  # symbols that traded in this process
        self._market: tuple[str, datetime] | None = None  # newest trade (date, ts) of any symbol
        self.marked: Counter[str] = Counter()  # minutes marked, by reason
        self.changed = False  # pending set changed since the last save

    # -- events ---------------------------------------------------------------------------------

    def mark(self, symbol: str, trade_date: str, first: int, last: int, reason: str) -> None:
        """Mark minutes first..last (epoch minutes, one trade date) of a symbol."""
        for minute in range(min(first, last), max(first, last) + 1):
            key = (symbol, minute)
            if key in self._pending or key in self._repaired:
                continue
            self._pending[key] = Suspect(symbol, trade_date, minute, reason)
            self.marked[reason] += 1
            self.changed = True

    def restored(self, symbol: str, trade_date: str, minute: int | None) -> None:
        """A checkpoint from an earlier process: its forming minute lost the trades in flight
        when that process died, and everything until this symbol's next trade is unknown."""
        if minute is None:
            return
        self._last[symbol] = (trade_date, minute)
        self.mark(symbol, trade_date, minute, minute, "start")
        self._open[symbol] = "start"

    def upstream_lost(self, reason: str = "reconnect") -> None:
        """The feed broke (a reconnect, a stall): every symbol's last minute now, and the
        minutes to its next trade when that arrives."""
        for symbol, (trade_date, minute) in self._last.items():
            self.mark(symbol, trade_date, minute, minute, reason)
            self._open[symbol] = reason

    def trade(self, symbol: str, trade_date: str, ts: datetime, cum: int, volume: int) -> None:
        """An accepted trade (duplicates and stale trades change nothing)."""
        minute = int(ts.timestamp()) // 60
        self._check_stall(trade_date, ts)
        last = self._last.get(symbol)
        if symbol not in self._seen:
            self._seen.add(symbol)
            if symbol not in self._open and cum > volume:
                self.mark(symbol, trade_date, minute, minute, "start")
        reason = self._open.pop(symbol, None)
        if reason is not None:
            if last is not None and last[0] == trade_date:
                self.mark(symbol, trade_date, last[1], minute, reason)
            elif cum > volume:  # a new day joined part way
                self.mark(symbol, trade_date, minute, minute, reason)
        if last is None or (trade_date, minute) > last:
            self._last[symbol] = (trade_date, minute)

    def jump(self, symbol: str, trade_date: str, first: int, last: int) -> None:
        self.mark(symbol, trade_date, first, last, "jump")

    def _check_stall(self, trade_date: str, ts: datetime) -> None:
        market = self._market
        if market is None or trade_date > market[0]:
            self._market = (trade_date, ts)
            return
        if trade_date < market[0] or ts <= market[1]:
            return
        self._market = (trade_date, ts)
        if (ts - market[1]).total_seconds() <= self.stall_s:
            return
        # Only silence during continuous trading counts: the closing call has no trades.
        end = min(ts, kst_to_utc(trade_date, self._continuous_end))
        if (end - market[1]).total_seconds() > self.stall_s:
            self.upstream_lost("stall")

    # -- repairs --------------------------------------------------------------------------------

    def due(self, now: datetime) -> dict[str, list[Suspect]]:
        """Pending minutes that ended at least `delay_s` before `now`, per symbol, oldest first."""
        limit = (now.timestamp() - self.delay_s) // 60  # minutes ending at or before this
        out: dict[str, list[Suspect]] = {}
        for (symbol, minute), suspect in sorted(self._pending.items()):
            if minute + 1 <= limit:
                out.setdefault(symbol, []).append(suspect)
        return out

    def next_due(self) -> datetime | None:
        """When the oldest pending minute becomes due (market time), or None."""
        if not self._pending:
            return None
        minute = min(m for _, m in self._pending)
        return datetime.fromtimestamp((minute + 1) * 60 + self.delay_s, UTC)

    def repaired(self, suspects: Iterable[Suspect]) -> None:
        for s in suspects:
            key = (s.symbol, s.minute)
            if self._pending.pop(key, None) is not None:
                self.changed = True
            self._repaired.add(key)
        if len(self._repaired) > 4096:
            horizon = max(m for _, m in self._repaired) - _KEEP_REPAIRED_MIN
            self._repaired = {k for k in self._repaired if k[1] >= horizon}

    def retry(self, suspects: Iterable[Suspect]) -> None:
        """Take back `repaired` for minutes whose repair could not be written."""
        for s in suspects:
            key = (s.symbol, s.minute)
            self._repaired.discard(key)
            self._pending.setdefault(key, s)
        self.changed = True

    def is_repaired(self, symbol: str, ts: datetime) -> bool:
        return (symbol, int(ts.timestamp()) // 60) in self._repaired

    def forget(self, symbols: Iterable[str]) -> None:
        """Drop pending minutes of symbols no longer recorded."""
        gone = set(symbols)
        before = len(self._pending)
        self._pending = {k: v for k, v in self._pending.items() if k[0] not in gone}
        self.changed = self.changed or len(self._pending) != before

    def pending(self) -> list[Suspect]:
        return sorted(self._pending.values(), key=lambda s: (s.symbol, s.minute))

    def __len__(self) -> int:
        return len(self._pending)

    # -- persistence ----------------------------------------------------------------------------

    def dump(self) -> list[list[object]]:
        self.changed = False
        return [s.as_list() for s in self.pending()]

    def load(self, rows: Iterable[list[Any]]) -> int:
        """Pending minutes saved by an earlier process; returns how many were taken."""
        taken = 0
        for symbol, trade_date, minute, reason in rows:
            key = (str(symbol), int(minute))
            if key not in self._pending:
                self._pending[key] = Suspect(key[0], str(trade_date), key[1], str(reason))
                taken += 1
        return taken
