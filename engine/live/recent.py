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
from engine.live.channels import encode, trade_data, trade_message

# Per symbol: ~10 s at 100 trades/s, a busy symbol's pace; a resume takes about 1 s.
RECENT_PER_SYMBOL = 1024


class CatchUp(enum.Enum):
    REPLAY = "replay"  # the trades after `last` are all here (perhaps none)
    GAP = "gap"  # some trades after `last` are no longer (or never were) here
    WAIT = "wait"  # the tab saw trades this replica has not had yet: wait for them


class _Held:
    """A held trade and, once some tab needed it, its JSON: a replica that lost its neighbour
    replays the same trades to hundreds of resumed tabs, and encodes each trade once."""

    __slots__ = ("_json", "trade")

    def __init__(self, trade: Trade) -> None:
        self.trade = trade
        self._json: str | None = None

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = encode(trade_data(self.trade))
        return self._json


class RecentTrades:
    def __init__(self, per_symbol: int = RECENT_PER_SYMBOL) -> None:
        self.per_symbol = per_symbol
        self._by_symbol: dict[str, deque[_Held]] = {}

    def add(self, records: Iterable[Record]) -> None:
        for record in records:
            if isinstance(record, Trade):
                held = self._by_symbol.get(record.symbol)
                if held is None:
                    held = self._by_symbol[record.symbol] = deque(maxlen=self.per_symbol)
                held.append(_Held(record))

    def after(self, symbol: str, last: int) -> tuple[CatchUp, list[Trade]]:
        """What to send a tab whose last trade of `symbol` had cumulative volume `last`."""
        state, held = self._after(symbol, last)
        return state, [h.trade for h in held]

    def replay(self, symbol: str, last: int) -> tuple[CatchUp, str | None]:
        """`after`, as the `trade` message (marked as a replay) that sends the missed trades;
        None when there are none."""
        state, held = self._after(symbol, last)
        if not held:
            return state, None
        return state, trade_message(symbol, [h.json for h in held], replayed=True)

    def _after(self, symbol: str, last: int) -> tuple[CatchUp, list[_Held]]:
        held = self._by_symbol.get(symbol)
        if not held:
            return CatchUp.WAIT, []
        newest = held[-1].trade.cum_volume
        if newest < last:
            return CatchUp.WAIT, []
        # From the newest back: the cost is the trades to send, not all that are held.
        missed: list[_Held] = []
        for entry in reversed(held):
            if entry.trade.cum_volume <= last:
                missed.reverse()
                return CatchUp.REPLAY, missed
            missed.append(entry)
        missed.reverse()
        oldest = held[0].trade
        if oldest.cum_volume - oldest.volume <= last:
            return CatchUp.REPLAY, missed
        return CatchUp.GAP, missed

    def forget(self, symbols: Iterable[str]) -> None:
        """Symbols this replica no longer receives: what it holds of them would go stale."""
        for symbol in symbols:
            self._by_symbol.pop(symbol, None)
