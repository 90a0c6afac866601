"""WebSocket channels: parsing, the KIS registrations behind them, and per-window coalescing.

Channel names are the contract's: `trade:SYMBOL`, `book:SYMBOL`, `candle:SYMBOL:INTERVAL` (any
interval `/candles` serves, named canonically: `candle:X:60m` is `candle:X:1h`). A window's
records become at most one message per channel, serialized once and shared by every client that
subscribed to it:
  trade  — every trade of the window, in arrival order (batched, never coalesced away);
  book   — the latest snapshot of the window wins;
  candle — the latest state of the forming 1-minute bar wins. The bar is the recorder's (the hub
           feeds `forming_updates` in through `candle_message`); only when no recorder runs is
           it built here from the same trades (`candles_from_trades`, docs/fanout.md).
Pure Python, no Ray.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from engine.domain.bars import LiveBar, MinuteBar
from engine.domain.intervals import parse_interval
from engine.domain.symbols import is_symbol
from engine.errors import BadRequestError, InvalidSymbolError
from engine.kis import tr
from engine.kis.records import BookSnapshot, Record, Trade
from engine.kis.registry import Registration

TRADE = "trade"
BOOK = "book"
CANDLE = "candle"
KINDS = (TRADE, BOOK, CANDLE)
MINUTE_INTERVAL = "1m"
MAX_CHANNEL_NAME = 32


@dataclass(frozen=True, slots=True, order=True)
class Channel:
    kind: str
    symbol: str
    interval: str | None = None

    def __str__(self) -> str:
        if self.interval is None:
            return f"{self.kind}:{self.symbol}"
        return f"{self.kind}:{self.symbol}:{self.interval}"

    @property
    def registration(self) -> Registration:
        """The upstream registration that feeds this channel (candles are built from trades)."""
        return Registration(tr.BOOK if self.kind == BOOK else tr.TRADE, self.symbol)


def parse_channel(name: object) -> Channel:
    """`"trade:005930"` → Channel; a typed BadRequestError subclass names what is wrong."""
    if not isinstance(name, str) or not name or len(name) > MAX_CHANNEL_NAME:
        raise BadRequestError(f"a channel is a string like 'trade:005930', got {name!r}")
    parts = name.split(":")
    kind = parts[0]
    if kind not in KINDS:
        raise BadRequestError(f"unknown channel kind {kind!r} in {name!r}; use trade, book, candle")
    expected = 3 if kind == CANDLE else 2
    if len(parts) != expected:
        form = "candle:SYMBOL:INTERVAL" if kind == CANDLE else f"{kind}:SYMBOL"
        raise BadRequestError(f"channel {name!r} must look like {form}")
    symbol = parts[1]
    if not is_symbol(symbol):
        raise InvalidSymbolError(f"invalid symbol {parts[1]!r} in channel {name!r}")
    if kind != CANDLE:
        return Channel(kind, symbol)
    # Every interval /candles serves, by its canonical name (InvalidIntervalError otherwise).
    return Channel(kind, symbol, parse_interval(parts[2]).name)


def channel_names(channels: Iterable[Channel]) -> list[str]:
    """Channels as clients name them, in order (for `subscribed` and `unsubscribed`)."""
    return [str(c) for c in channels]


def parse_channels(names: object) -> tuple[Channel, ...]:
    """A non-empty list of channel names → unique Channels in the given order; all or nothing."""
    if not isinstance(names, list) or not names:
        raise BadRequestError("'channels' must be a non-empty list of channel names")
    return tuple(dict.fromkeys(parse_channel(n) for n in names))


def registrations_for(channels: Iterable[Channel]) -> frozenset[Registration]:
    return frozenset(c.registration for c in channels)


# -- wire shapes ---------------------------------------------------------------------------------


def _epoch_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def trade_data(t: Trade) -> dict[str, object]:
    return {
        "time": _epoch_ms(t.ts),
        "price": t.price,
        "volume": t.volume,
        "side": t.side,
        "change": t.change,
        "change_rate": t.change_rate,
        "cum_volume": t.cum_volume,
    }


def book_data(b: BookSnapshot) -> dict[str, object]:
    return {
        "time": _epoch_ms(b.ts),
        "asks": list(b.asks),
        "bids": list(b.bids),
        "ask_sizes": list(b.ask_sizes),
        "bid_sizes": list(b.bid_sizes),
        "total_ask_size": b.total_ask_size,
        "total_bid_size": b.total_bid_size,
    }


def encode(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def trade_message(symbol: str, trades_json: list[str], *, replayed: bool = False) -> str:
    """A `trade` message from trades already encoded one by one (`encode(trade_data(t))`): the
    same text as encoding the whole message, without encoding a trade again for every tab."""
    head = f'{{"type":"{TRADE}","symbol":{json.dumps(symbol, ensure_ascii=False)},"data":['
    tail = '],"replayed":true}' if replayed else "]}"
    return head + ",".join(trades_json) + tail


def candle_message(symbol: str, bar: MinuteBar | LiveBar, interval: str = MINUTE_INTERVAL) -> str:
    """The `candle` message for a forming bar: its data and `live: true`."""
    data = {**bar.as_data(), "live": True}
    return encode({"type": CANDLE, "symbol": symbol, "interval": interval, "data": data})


def newer_bar(held: MinuteBar | LiveBar | None, bar: MinuteBar | LiveBar) -> bool:
    """Whether `bar` may replace `held` on a live channel: a later bucket, or the same bucket
    with more volume. Volume only grows within a bar, so an equal or smaller one is a stale
    copy (an update that was in flight, a cache) and would make the chart step backwards."""
    if held is None:
        return True
    return (bar.time, bar.volume) > (held.time, held.volume)


class WindowCoalescer:
    """Collects one window's records and renders them once per channel (see module doc)."""

    def __init__(self, *, candles_from_trades: bool = True) -> None:
        # False while the recorder is the candle source: trades then build no bar here.
        self.candles_from_trades = candles_from_trades
        self._trades: dict[str, list[Trade]] = {}
        self._books: dict[str, BookSnapshot] = {}
        self._bars: dict[str, MinuteBar] = {}
        self._bars_changed: set[str] = set()

    def add(self, records: Iterable[Record]) -> None:
        for record in records:
            if isinstance(record, Trade):
                self._trades.setdefault(record.symbol, []).append(record)
                if self.candles_from_trades:
                    self._update_bar(record)
            elif isinstance(record, BookSnapshot):
                self._books[record.symbol] = record  # the latest snapshot wins

    def _update_bar(self, t: Trade) -> None:
        start = t.ts.replace(second=0, microsecond=0)
        bar = self._bars.get(t.symbol)
        if bar is None or start > bar.ts:
            self._bars[t.symbol] = MinuteBar(
                t.symbol, start, t.price, t.price, t.price, t.price, t.volume
            )
        elif start == bar.ts:
            self._bars[t.symbol] = bar.with_trade(t.price, t.volume)
        else:
            return  # a late trade of a closed bar: the recorder owns history, not the live view
        self._bars_changed.add(t.symbol)

    def drain(self, wanted: frozenset[Channel] | set[Channel]) -> dict[Channel, str]:
        """The window's messages for the channels someone wants; resets the window."""
        out: dict[Channel, str] = {}
        for symbol, trades in self._trades.items():
            channel = Channel(TRADE, symbol)
            if channel in wanted:
                data = [trade_data(t) for t in trades]
                out[channel] = encode({"type": TRADE, "symbol": symbol, "data": data})
        for symbol, book in self._books.items():
            channel = Channel(BOOK, symbol)
            if channel in wanted:
                out[channel] = encode({"type": BOOK, "symbol": symbol, "data": book_data(book)})
        for symbol in self._bars_changed if self.candles_from_trades else ():
            channel = Channel(CANDLE, symbol, MINUTE_INTERVAL)
            if channel in wanted:
                out[channel] = candle_message(symbol, self._bars[symbol])
        self._trades.clear()
        self._books.clear()
        self._bars_changed.clear()
        return out

    def latest_candle(self, symbol: str) -> str | None:
        """The trade-built forming bar now, for a client that just subscribed (None if none)."""
        bar = self._bars.get(symbol) if self.candles_from_trades else None
        if bar is None:
            return None
        return candle_message(symbol, bar)

    def forget_bars(self) -> None:
        """Drop the trade-built bars (the recorder became the source, or left and came back)."""
        self._bars.clear()
        self._bars_changed.clear()
