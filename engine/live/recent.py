"""The trades a replica delivered lately, so a tab that resumes here gets what it missed.

A tab whose replica died reconnects (through the same URL) to another replica with
`?resume=<session>&last=<symbol>:<cum_volume>,...`: the cumulative volume of the last trade it
received of each symbol. A symbol's cumulative volume only grows within a trading day, and a
trade's `cum_volume - volume` is the previous trade's `cum_volume`, so the trades after `last`
are known exactly, and whether this replica still holds the first of them. Pure Python, no Ray.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable

from engine.kis.records import Record, Trade

# Per symbol: ~10 s at 100 trades/s, a busy symbol's pace; a resume takes about 1 s.
RECENT_PER_SYMBOL = 1024


class CatchUp(enum.Enum):
    REPLAY = "replay"  # the trades after `last` are all here (perhaps none)
    GAP = "gap"  # some trades after `last` are no longer (or never were) here
    WAIT = "wait"  # the tab saw trades this replica has not had yet: wait for them


class RecentTrades:
    def __init__(self, per_symbol: int = RECENT_PER_SYMBOL) -> None:
        self.per_symbol = per_symbol
        self._by_symbol: dict[str, deque[Trade]] = {}

    def add(self, records: Iterable[Record]) -> None:
        for record in records:
            if isinstance(record, Trade):
                held = self._by_symbol.get(record.symbol)
                if held is None:
                    held = self._by_symbol[record.symbol] = deque(maxlen=self.per_symbol)
                held.append(record)

    def after(self, symbol: str, last: int) -> tuple[CatchUp, list[Trade]]:
        """What to send a tab whose last trade of `symbol` had cumulative volume `last`."""
        held = self._by_symbol.get(symbol)
        if not held:
            return CatchUp.WAIT, []
        newest = held[-1].cum_volume
        if newest < last:
            return CatchUp.WAIT, []
        if newest == last:
            return CatchUp.REPLAY, []
        oldest = held[0]
        trades = [t for t in held if t.cum_volume > last]
        if oldest.cum_volume - oldest.volume <= last:
            return CatchUp.REPLAY, trades
        return CatchUp.GAP, trades

    def forget(self, symbols: Iterable[str]) -> None:
        """Symbols this replica no longer receives: what it holds of them would go stale."""
        for symbol in symbols:
            self._by_symbol.pop(symbol, None)
