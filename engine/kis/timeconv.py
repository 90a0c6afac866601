"""KST wall-clock strings to UTC datetimes. KST is UTC+9 fixed, no DST."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.domain.kst import KST, KST_OFFSET

# A frame repeats the same second many times; caching the conversion is the single
# biggest saving in the decoder. Bounded by clearing: keys are one per (date, second).
_CACHE: dict[str, datetime] = {}
_CACHE_MAX = 200_000


def kst_to_utc(date: str, hhmmss: str) -> datetime:
    """`YYYYMMDD` + `HHMMSS` in KST → aware UTC datetime. ValueError on anything malformed."""
    key = date + hhmmss
    ts = _CACHE.get(key)
    if ts is not None:
        return ts
    if len(date) != 8 or len(hhmmss) != 6 or not key.isascii() or not key.isdigit():
        raise ValueError(f"bad KST date/time {date!r} {hhmmss!r}")
    ts = (
        datetime(
            int(date[:4]),
            int(date[4:6]),
            int(date[6:]),
            int(hhmmss[:2]),
            int(hhmmss[2:4]),
            int(hhmmss[4:]),
            tzinfo=UTC,
        )
        - KST_OFFSET
    )
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = ts
    return ts


def kst_today(now: datetime | None = None) -> str:
    """The KST calendar date (YYYYMMDD) of `now` (default: the present)."""
    return (now or datetime.now(UTC)).astimezone(KST).strftime("%Y%m%d")
