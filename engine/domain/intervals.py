"""Candle intervals: parsing, bucket alignment, and which relation serves or derives each one.

Sub-daily buckets are aligned to the UTC epoch (KST is UTC+9 with no DST, so they are also
KST-aligned). A daily bucket is one KST trading date, stamped 00:00 UTC of that date. A weekly
bucket starts on Monday and is stamped 00:00 UTC of the Monday date.

Intervals with an aggregate relation of their own (1m, 5m, 15m, 1h, 1d) are read directly; every
other one is rolled up in polars from the coarsest stored interval that divides it (3m from 1m,
30m from 15m, 4h from 1h, 1w from 1d).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import InvalidIntervalError

MINUTE = 60
HOUR = 3600
DAY = 86_400
WEEK = 7 * DAY
# 1970-01-01 was a Thursday; Monday-aligned weeks start 4 days after the epoch.
WEEK_ORIGIN = 4 * DAY

# Stored relations, finest first. `market_candles` holds only interval='1m' rows.
RELATIONS: dict[int, str] = {
    MINUTE: "market_candles",
    5 * MINUTE: "market_candles_5m",
    15 * MINUTE: "market_candles_15m",
    HOUR: "market_candles_1h",
    DAY: "market_candles_1d",
}

_INTERVAL_RE = re.compile(r"^([1-9][0-9]{0,3})([mhdw])$")
_UNIT_SECONDS = {"m": MINUTE, "h": HOUR, "d": DAY, "w": WEEK}


@dataclass(frozen=True, slots=True)
class Interval:
    """A bucket width in seconds and the relation it is read from."""

    name: str
    seconds: int

    @property
    def origin(self) -> int:
        """Epoch second that bucket boundaries are counted from."""
        return WEEK_ORIGIN if self.seconds == WEEK else 0

    @property
    def is_intraday(self) -> bool:
        return self.seconds < DAY

    @property
    def source_seconds(self) -> int:
        """Width of the stored relation this interval is read or derived from."""
        if self.seconds == WEEK:
            return DAY
        return max(s for s in RELATIONS if self.seconds % s == 0)

    @property
    def relation(self) -> str:
        return RELATIONS[self.source_seconds]

    @property
    def is_derived(self) -> bool:
        return self.source_seconds != self.seconds

    def floor(self, ts: int) -> int:
        """Start of the bucket holding epoch second `ts`."""
        return ts - (ts - self.origin) % self.seconds

    def ceil(self, ts: int) -> int:
        """The first bucket start at or after `ts`."""
        start = self.floor(ts)
        return start if start == ts else start + self.seconds


def parse_interval(text: str) -> Interval:
    """'1m', '3m', '4h', '1d', '1w', ... → Interval. Raises InvalidIntervalError.

    Minute and hour intervals must tile a day (divide 1440 minutes) so every bucket sits inside one
    UTC day and rolls up exactly from a stored relation; days and weeks only as 1d and 1w.
    """
    # Lower-case only past the number: an upper-case M would mean months elsewhere.
    text = text.strip() if isinstance(text, str) else ""
    match = _INTERVAL_RE.match(text if text.endswith("M") else text.lower())
    if match is None:
        raise InvalidIntervalError(f"unknown interval {text!r}; use e.g. 1m, 5m, 15m, 1h, 1d, 1w")
    count, unit = int(match.group(1)), match.group(2)
    seconds = count * _UNIT_SECONDS[unit]
    if unit in "dw" and count != 1:
        raise InvalidIntervalError(
            f"interval {text!r}: only 1d and 1w are supported for days/weeks"
        )
    if unit in "mh" and (seconds > DAY or DAY % seconds != 0):
        raise InvalidIntervalError(
            f"interval {text!r}: minute and hour intervals must divide a day (1440 minutes)"
        )
    if seconds == DAY:
        return Interval("1d", DAY)
    return Interval(_canonical_name(seconds), seconds)


def _canonical_name(seconds: int) -> str:
    if seconds == WEEK:
        return "1w"
    if seconds % HOUR == 0:
        return f"{seconds // HOUR}h"
    return f"{seconds // MINUTE}m"


# TradingView resolutions: minutes as a bare number, then D/W with an optional count.
_RESOLUTION_RE = re.compile(r"^(?:([1-9][0-9]{0,3})|1?D|1?W)$")


def parse_resolution(resolution: str) -> Interval:
    """A TradingView UDF resolution ('1', '5', '60', '240', 'D', '1D', 'W', '1W') → Interval."""
    text = resolution.strip().upper() if isinstance(resolution, str) else ""
    match = _RESOLUTION_RE.match(text)
    if match is None:
        raise InvalidIntervalError(f"unsupported resolution {resolution!r}")
    if match.group(1):
        return parse_interval(f"{match.group(1)}m")
    return parse_interval("1d" if text.endswith("D") else "1w")


def resolution_of(interval: Interval) -> str:
    """The TradingView resolution string for an interval."""
    if interval.seconds == DAY:
        return "1D"
    if interval.seconds == WEEK:
        return "1W"
    return str(interval.seconds // MINUTE)


SUPPORTED_RESOLUTIONS = ("1", "3", "5", "15", "30", "60", "240", "1D", "1W")
