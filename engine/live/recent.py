"""The trades a replica delivered lately, so a tab that resumes here gets what it missed.

A tab whose replica died reconnects (through the same URL) to another replica with
`?resume=<session>&last=<symbol>:<cum_volume>,...`: the cumulative volume of the last trade it
received of each symbol. A symbol's cumulative volume only grows within a trading day, and a
trade's `cum_volume - volume` is the previous trade's `cum_volume`, so the trades after `last`
are known exactly, and whether this replica still holds the first of them. Pure Python, no Ray.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from collections.abc import Iterable

from engine.kis.records import Record, Trade
from engine.live.channels import encode, trade_data, trade_message

# Per symbol: ~10 s at 100 trades/s, a busy symbol's pace; a resume takes about 1 s.
RECENT_PER_SYMBOL = 1024


class CatchUp(enum.Enum):
    REPLAY = "replay"  # the trades after `last` are all here (perhaps none)
    GAP = "gap"  # some trades after `last` are no longer (or never were) here
    WAIT = "wait"  # the tab saw trades this replica has not had yet: wait for them


class _SymbolTrades:
    """One symbol's trades in arrival order, with their cumulative volumes (ascending within a
    day, so a resume finds its place by bisection) and, encoded once, their JSON: a replica
    whose neighbour died replays the same trades to hundreds of resumed tabs at once."""

    __slots__ = ("cums", "jsons", "trades")

    def __init__(self) -> None:
        self.trades: list[Trade] = []
        self.cums: list[int] = []
        self.jsons: list[str] = []  # trades[: len(jsons)], encoded

    def add(self, trade: Trade, keep: int) -> None:
        if self.cums and trade.cum_volume < self.cums[-1]:
            if trade.trade_date == self.trades[-1].trade_date:  # the KST trading date
                return  # out of order (it went out live): a replay could not place it
            self.trades.clear()  # a new trading day: yesterday's trades replay to nobody
            self.cums.clear()
            self.jsons.clear()
        self.trades.append(trade)
        self.cums.append(trade.cum_volume)
        if len(self.trades) > 2 * keep:  # trimmed now and then, not at every trade
            drop = len(self.trades) - keep
            del self.trades[:drop], self.cums[:drop], self.jsons[:drop]

    def encoded(self, start: int) -> list[str]:
        for trade in self.trades[len(self.jsons) :]:
            self.jsons.append(encode(trade_data(trade)))
        return self.jsons[start:]


class RecentTrades:
    def __init__(self, per_symbol: int = RECENT_PER_SYMBOL) -> None:
        self.per_symbol = per_symbol
        self._by_symbol: dict[str, _SymbolTrades] = {}

    def add(self, records: Iterable[Record]) -> None:
        for record in records:
            if isinstance(record, Trade):
                held = self._by_symbol.get(record.symbol)
                if held is None:
                    held = self._by_symbol[record.symbol] = _SymbolTrades()
                held.add(record, self.per_symbol)

    def after(self, symbol: str, last: int) -> tuple[CatchUp, list[Trade]]:
        """What to send a tab whose last trade of `symbol` had cumulative volume `last`."""
        state, start = self._after(symbol, last)
        if start is None:
            return state, []
        return state, self._by_symbol[symbol].trades[start:]

    def replay(self, symbol: str, last: int) -> tuple[CatchUp, str | None]:
        """`after`, as the `trade` message (marked as a replay) that sends the missed trades;
        None when there are none."""
        state, start = self._after(symbol, last)
        if start is None:
            return state, None
        return state, trade_message(symbol, self._by_symbol[symbol].encoded(start), replayed=True)

    def _after(self, symbol: str, last: int) -> tuple[CatchUp, int | None]:
        """The state, and where the missed trades start in the symbol's list (None: none)."""
        held = self._by_symbol.get(symbol)
        if held is None or not held.cums:
            return CatchUp.WAIT, None
        cums = held.cums
        if cums[-1] < last:
            return CatchUp.WAIT, None
        if cums[-1] == last:
            return CatchUp.REPLAY, None
        oldest = max(0, len(cums) - self.per_symbol)  # what is held: the last per_symbol
        start = bisect_right(cums, last, oldest)
        if start > oldest:  # the tab's last trade is held: nothing after it is missing
            return CatchUp.REPLAY, start
        first = held.trades[oldest]
        if first.cum_volume - first.volume <= last:
            return CatchUp.REPLAY, start
        return CatchUp.GAP, start

    def forget(self, symbols: Iterable[str]) -> None:
        """Symbols this replica no longer receives: what it holds of them would go stale."""
        for symbol in symbols:
            self._by_symbol.pop(symbol, None)
