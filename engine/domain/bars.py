"""The one 1-minute bar: what the recorder builds, the database stores, the KIS chart returns,
the candle service merges as the forming bar, and the live channels send; and the one forming
bucket of any interval (`LiveBar`), the 1-minute bar rolled up with its bucket's stored minutes.
Both cross actors as these objects and reach clients through `as_data`.

Prices are whole won as `int`; a `numeric` column read back may give `Decimal`, and a bar from
the candle service may carry floats, so `Price` admits those and `as_data` writes whole values as
integers. Volume is shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias

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
        """The bar as clients see it: {time, open, high, low, close, volume}."""
        return _data(self)


@dataclass(frozen=True, slots=True)
class LiveBar:
    """The forming bucket of some interval: its stored minutes plus the forming 1-minute bar."""

    time: int  # bucket start, epoch seconds (a KST date at 00:00 UTC for 1d, Monday for 1w)
    open: float
    high: float
    low: float
    close: float
    volume: int

    @classmethod
    def of(
        cls,
        bucket: int,
        forming: MinuteBar,
        stored: tuple[float, float, float, float, int] | None,
    ) -> LiveBar:
        """`stored`: the bucket's minutes before the forming one as (open, high, low, close,
        volume), or None when it has none."""
        f_open, f_high, f_low, f_close = (
            float(p) for p in (forming.open, forming.high, forming.low, forming.close)
        )
        if stored is None:
            return cls(bucket, f_open, f_high, f_low, f_close, forming.volume)
        o, h, low, _, v = stored
        return cls(bucket, o, max(h, f_high), min(low, f_low), f_close, v + forming.volume)

    def as_data(self) -> dict[str, Any]:
        """The bucket as clients see it: {time, open, high, low, close, volume}."""
        return _data(self)


def _data(bar: MinuteBar | LiveBar) -> dict[str, Any]:
    """A bar's client form; whole KRW prices as integers."""
    return {
        "time": bar.time,
        "open": _plain(bar.open),
        "high": _plain(bar.high),
        "low": _plain(bar.low),
        "close": _plain(bar.close),
        "volume": bar.volume,
    }


__all__ = ["LiveBar", "MinuteBar", "Price"]
