"""The one 1-minute bar: what the recorder builds, the database stores, the KIS chart returns,
the candle service merges as the forming bar, and the live channels send.

Prices are whole won as `int`; a `numeric` column read back may give `Decimal`, and a bar from
another process may carry floats, so `Price` admits those and `as_data` writes whole values as
integers. Volume is shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeAlias

from engine.domain.symbols import parse_symbol
from engine.errors import BadRequestError

Price: TypeAlias = int | Decimal | float


def _plain(price: Price) -> int | float:
    """A price for JSON: whole values as int, others as float."""
    return int(price) if price == int(price) else float(price)


@dataclass(frozen=True, slots=True)
class MinuteBar:
    """One 1-minute candle of `symbol`; `ts` is the aware UTC start of its minute."""

    symbol: str
    ts: datetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: int

    @property
    def time(self) -> int:
        """The minute's start in epoch seconds."""
        return int(self.ts.timestamp())

    def with_trade(self, price: Price, volume: int) -> MinuteBar:
        """This bar after one more trade of the same minute, in arrival order."""
        return MinuteBar(
            self.symbol,
            self.ts,
            self.open,
            max(self.high, price),
            min(self.low, price),
            price,
            self.volume + volume,
        )

    def as_data(self) -> dict[str, Any]:
        """The bar as clients and actors exchange it: {time, open, high, low, close, volume}."""
        return {
            "time": self.time,
            "open": _plain(self.open),
            "high": _plain(self.high),
            "low": _plain(self.low),
            "close": _plain(self.close),
            "volume": self.volume,
        }

    @classmethod
    def from_data(cls, symbol: str, data: Mapping[str, Any]) -> MinuteBar:
        """From `as_data`'s shape (`time` may also be `ts`, an aware datetime); the minute is
        the one `time` falls in. BadRequestError names what is wrong."""
        stamp: Any = data.get("time", data.get("ts"))  # int() below rejects what is not a time
        if isinstance(stamp, datetime):
            stamp = stamp.timestamp()
        try:
            minute = int(stamp) - int(stamp) % 60
            o, h, low, c = (_number(data[k]) for k in ("open", "high", "low", "close"))
            volume = int(data.get("volume", 0))
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise BadRequestError(f"minute bar for {symbol}: {exc!r}") from None
        if not (low <= min(o, c) and h >= max(o, c)):
            raise BadRequestError(f"minute bar for {symbol}: high/low do not bound open/close")
        ts = datetime.fromtimestamp(minute, UTC)
        return cls(parse_symbol(symbol), ts, o, h, low, c, volume)


def _number(value: Any) -> Price:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return value
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"not a price: {value!r}")
    return int(number) if number.is_integer() else number


__all__ = ["MinuteBar", "Price"]
