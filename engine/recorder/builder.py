"""Ticks → 1-minute bars, exact under duplicates, reordering, replays and restarts.

A bar is labelled by the start of its KST minute (BSOP_DATE + STCK_CNTG_HOUR, as UTC). Prices give
OHLC; volume comes from ACML_VOL, the day's cumulative volume, which identifies each trade of a
symbol and day: a trade whose ACML_VOL was already seen is a duplicate and adds nothing.

Volume rule. Sort a symbol-day's distinct ticks by ACML_VOL. A tick's volume is its ACML_VOL minus
the previous tick's; the lowest tick, with nothing known below it, counts its own CNTG_VOL. So a
jump in ACML_VOL larger than CNTG_VOL (ticks we never received) is attributed to the tick that
reveals it and counted as `missed_volume`, and the day's total volume is always exactly the
highest ACML_VOL minus the baseline. The result does not depend on arrival order.

Late ticks. A tick for an earlier minute than the forming one updates that minute's bar (open and
close are the prices of its lowest and highest ACML_VOL, so they do not depend on order either),
and the bar is emitted again for upsert. Only ACML_VOL values within the last `window` distinct
ticks of a symbol-day are remembered; a tick at or below that floor is treated as already counted
(`stale`) and changes nothing. After a restart the floor is the checkpointed ACML_VOL.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from engine.domain.bars import MinuteBar
from engine.kis.records import Trade

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 4096  # distinct ticks per symbol-day kept for duplicate and reorder detection


class TickOutcome(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # ACML_VOL already seen
    STALE = "stale"  # at or below the remembered floor, or a past trading day
    REJECTED = "rejected"  # not a usable trade (non-positive price, negative volume…)


class _MinuteTally:
    """A minute's running OHLCV while its ticks arrive (MinuteBar is made from it);
    `open_cum`/`close_cum` order prices by ACML_VOL."""

    __slots__ = ("close", "close_cum", "high", "low", "open", "open_cum", "volume")

    def __init__(self, price: int, cum: int) -> None:
        self.open = self.high = self.low = self.close = price
        self.open_cum = self.close_cum = cum
        self.volume = 0

    def add(self, price: int, cum: int) -> None:
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        if cum > self.close_cum:
            self.close, self.close_cum = price, cum
        elif cum < self.open_cum:
            self.open, self.open_cum = price, cum


def _minute_ts(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a restarted builder needs to continue a symbol-day without double counting:
    the highest ACML_VOL counted and the forming bar (if any) with its ACML_VOL span."""

    symbol: str
    trade_date: str
    cum_volume: int
    forming: MinuteBar | None = None
    open_cum: int = 0
    close_cum: int = 0


class _SymbolDay:
    __slots__ = (
        "bars",
        "cums",
        "dirty",
        "floor",
        "forming",
        "head_vol",
        "minutes",
        "pruned_before",
        "symbol",
        "trade_date",
    )

    def __init__(self, symbol: str, trade_date: str) -> None:
        self.symbol = symbol
        self.trade_date = trade_date
        self.cums: list[int] = []  # distinct ACML_VOL seen, ascending
        self.minutes: list[int] = []  # the epoch minute of each, parallel to cums
        self.head_vol = 0  # CNTG_VOL of cums[0] while no floor is known
        self.floor: int | None = None  # everything <= floor is counted already
        self.bars: dict[int, _MinuteTally] = {}
        self.dirty: set[int] = set()
        self.forming = -1  # newest minute seen
        self.pruned_before = -1  # bars before this minute are gone from memory

    def max_cum(self) -> int:
        if self.cums:
            return self.cums[-1]
        return self.floor or 0


class BarBuilder:
    """Builds 1-minute bars per symbol from trades. Not thread-safe; one owner.

    `add` each trade; `drain` returns the bars that changed and are closed (older than the
    forming minute, or older than `until`); `forming_bars` shows the live ones.
    """

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self._window = window
        self._days: dict[str, _SymbolDay] = {}  # symbol → current trading day
        self._retired: list[_SymbolDay] = []  # previous days with bars still to drain
        self.accepted = 0
        self.duplicates = 0
        self.stale = 0
        self.rejected = 0
        self.missed_volume = 0  # volume revealed by ACML_VOL jumps, not seen as ticks
        # (symbol, trade date, first minute, last minute) where trades were missed; the owner
        # takes them with `take_jumps` (the recorder repairs those minutes).
        self._jumps: list[tuple[str, str, int, int]] = []

    # -- input ----------------------------------------------------------------------------------

    def add(self, trade: Trade) -> TickOutcome:
        price, cum, vol = trade.price, trade.cum_volume, trade.volume
        if price <= 0 or vol < 0 or cum <= 0 or cum < vol:
            self.rejected += 1
            return TickOutcome.REJECTED
        day = self._day_for(trade.symbol, trade.trade_date)
        if day is None:
            self.stale += 1
            return TickOutcome.STALE
        if day.floor is not None and cum <= day.floor:
            self.stale += 1
            return TickOutcome.STALE
        cums = day.cums
        i = bisect_left(cums, cum)
        n = len(cums)
        if i < n and cums[i] == cum:
            self.duplicates += 1
            return TickOutcome.DUPLICATE
        minute = int(trade.ts.timestamp()) // 60
        if minute < day.pruned_before:
            # Its bar is no longer held: a partial bar would overwrite the stored one.
            self.stale += 1
            return TickOutcome.STALE
        # This tick's own volume: the ACML_VOL step from the tick below it.
        if i > 0:
            own = cum - cums[i - 1]
        elif day.floor is not None:
            own = cum - day.floor
        else:
            own = vol
        if own > vol:
            self.missed_volume += own - vol
            # The missed trades lie between the tick below and this one.
            if i > 0:
                below = day.minutes[i - 1]
            else:
                below = min(day.forming, minute) if day.forming >= 0 else minute
            self._jumps.append((trade.symbol, trade.trade_date, below, minute))
        bars = day.bars
        if i < n:
            # Inserted below a known tick: that tick's step shrinks by what this one now claims.
            above_cum = cums[i]
            if i > 0:
                old = above_cum - cums[i - 1]
            elif day.floor is not None:
                old = above_cum - day.floor
            else:
                old = day.head_vol
            above = (above_cum - cum) - old
            if above:
                above_minute = day.minutes[i]
                bars[above_minute].volume += above
                day.dirty.add(above_minute)
                if above > 0:
                    self.missed_volume += above
                    self._jumps.append((trade.symbol, trade.trade_date, minute, above_minute))
            if i == 0 and day.floor is None:
                day.head_vol = vol
            cums.insert(i, cum)
            day.minutes.insert(i, minute)
        else:
            if n == 0 and day.floor is None:
                day.head_vol = vol
            cums.append(cum)
            day.minutes.append(minute)
        bar = bars.get(minute)
        if bar is None:
            bar = bars[minute] = _MinuteTally(price, cum)
        else:
            bar.add(price, cum)
        bar.volume += own
        day.dirty.add(minute)
        if minute > day.forming:
            day.forming = minute
        if len(cums) > 2 * self._window:
            self._trim(day)
        self.accepted += 1
        return TickOutcome.ACCEPTED

    def take_jumps(self) -> list[tuple[str, str, int, int]]:
        """The ACML_VOL jumps seen since the last call: (symbol, date, first, last minute)."""
        jumps, self._jumps = self._jumps, []
        return jumps

    def add_many(self, trades: Iterable[Trade]) -> int:
        """Add trades; returns how many were accepted."""
        before = self.accepted
        for trade in trades:
            self.add(trade)
        return self.accepted - before

    def _trim(self, day: _SymbolDay) -> None:
        cut = len(day.cums) - self._window
        day.floor = day.cums[cut - 1]
        del day.cums[:cut]
        del day.minutes[:cut]

    def _day_for(self, symbol: str, trade_date: str) -> _SymbolDay | None:
        day = self._days.get(symbol)
        if day is not None:
            if day.trade_date == trade_date:
                return day
            if trade_date < day.trade_date:
                for old in self._retired:
                    if old.symbol == symbol and old.trade_date == trade_date:
                        return old
                return None
            if day.dirty:
                self._retired.append(day)
        day = self._days[symbol] = _SymbolDay(symbol, trade_date)
        return day

    # -- output ---------------------------------------------------------------------------------

    def drain(self, until: datetime | None = None) -> list[MinuteBar]:
        """Bars that changed since the last drain and are closed.

        A bar is closed when a later minute of its symbol has a trade, or when it starts before
        `until` (the caller's clock says its minute is over). A previous trading day's bars are
        all closed. Drained bars that change again (late ticks) are returned again.
        """
        limit = None if until is None else int(until.timestamp()) // 60
        out: list[MinuteBar] = []
        for day in self._retired:
            out.extend(self._take(day, None))
        self._retired = [d for d in self._retired if d.dirty]
        for day in self._days.values():
            if day.dirty:
                cutoff = day.forming if limit is None else max(day.forming, limit)
                out.extend(self._take(day, cutoff))
        return out

    def _take(self, day: _SymbolDay, cutoff: int | None) -> Iterator[MinuteBar]:
        ready = [m for m in day.dirty if cutoff is None or m < cutoff]
        ready.sort()
        for minute in ready:
            day.dirty.discard(minute)
            yield self._bar(day.symbol, minute, day.bars[minute])

    @staticmethod
    def _bar(symbol: str, minute: int, bar: _MinuteTally) -> MinuteBar:
        return MinuteBar(
            symbol, _minute_ts(minute), bar.open, bar.high, bar.low, bar.close, bar.volume
        )

    def forming_bar(self, symbol: str) -> MinuteBar | None:
        """The symbol's newest bar (the one still forming), or None before its first trade."""
        day = self._days.get(symbol)
        if day is None or day.forming < 0:
            return None
        return self._bar(symbol, day.forming, day.bars[day.forming])

    def forming_bars(self) -> dict[str, MinuteBar]:
        return {s: bar for s in self._days if (bar := self.forming_bar(s)) is not None}

    def symbols(self) -> list[str]:
        return list(self._days)

    def drop_symbol(self, symbol: str) -> None:
        """Forget a symbol (after its last bars were drained)."""
        self._days.pop(symbol, None)

    def prune(self, keep_minutes: int = 24 * 60) -> None:
        """Free clean bars older than `keep_minutes` before each symbol's forming minute and
        below the remembered ticks; later ticks for those minutes count as stale."""
        for day in self._days.values():
            horizon = day.forming - keep_minutes
            if day.minutes:
                horizon = min(horizon, min(day.minutes))
            if horizon <= day.pruned_before:
                continue
            day.pruned_before = horizon
            for minute in [m for m in day.bars if m < horizon and m not in day.dirty]:
                del day.bars[minute]

    # -- restart ---------------------------------------------------------------------------------

    def checkpoints(self) -> list[Checkpoint]:
        """Per symbol: the highest ACML_VOL counted and the forming bar, to persist with the bars
        written by the same flush."""
        out: list[Checkpoint] = []
        for symbol, day in self._days.items():
            if day.forming < 0 and day.floor is None:
                continue
            bar = day.bars.get(day.forming)
            out.append(
                Checkpoint(
                    symbol,
                    day.trade_date,
                    day.max_cum(),
                    self._bar(symbol, day.forming, bar) if bar is not None else None,
                    bar.open_cum if bar is not None else 0,
                    bar.close_cum if bar is not None else 0,
                )
            )
        return out

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue a symbol-day from a checkpoint: ticks at or below its ACML_VOL count as seen;
        its forming bar keeps collecting (and is written when it closes)."""
        day = _SymbolDay(checkpoint.symbol, checkpoint.trade_date)
        day.floor = checkpoint.cum_volume
        bar = checkpoint.forming
        if bar is not None:
            minute = int(bar.ts.timestamp()) // 60
            state = _MinuteTally(int(bar.open), checkpoint.open_cum)
            state.high, state.low = int(bar.high), int(bar.low)
            state.close, state.close_cum = int(bar.close), checkpoint.close_cum
            state.volume = bar.volume
            day.bars[minute] = state
            day.dirty.add(minute)
            day.forming = minute
            # Earlier minutes are in the database already; a tick for one is a straggler.
            day.pruned_before = minute
        self._days[checkpoint.symbol] = day

    def stats(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "stale": self.stale,
            "rejected": self.rejected,
            "missed_volume": self.missed_volume,
        }
