"""What the candle and UDF routes of the ingress need besides the CandleActor: request parsing
into a CandleQuery, and the TradingView UDF datafeed's static descriptions.

The routes themselves are methods of `api.app.KisrayIngress` (Serve's ingress class).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from functools import lru_cache

from engine.candles.service import CandleQuery, build_query
from engine.config import Settings
from engine.domain.calendar import get_calendar
from engine.domain.intervals import SUPPORTED_RESOLUTIONS, parse_resolution
from engine.domain.krx import SYMBOL_NAMES, variable_tick_size
from engine.domain.kst import KST_OFFSET_S

EXCHANGE = "KRX"
TIMEZONE = "Asia/Seoul"


def candle_query(
    settings: Settings,
    symbol: str,
    interval: str,
    start: str | int | None,
    end: str | int | None,
    limit: int | None,
    countback: int | None,
    fill: bool,
) -> CandleQuery:
    """`countback` (TradingView's rule) outranks `from`: that many bars ending at `to`.
    `limit` keeps `from` and returns the newest `limit` candles of the range."""
    if countback is not None:
        start, limit = None, countback
    return build_query(
        symbol, interval, start, end, limit, fill, max_buckets=settings.candles_max_buckets
    )


def udf_query(
    settings: Settings,
    symbol: str,
    resolution: str,
    start: int | None,
    end: int | None,
    countback: int | None,
) -> CandleQuery:
    interval = parse_resolution(resolution).name
    return candle_query(settings, symbol, interval, start, end, None, countback, True)


def udf_config() -> dict:
    """The adapter needs search or group requests; kisray answers search and single-symbol
    resolution. Resolution `1M` is not served and not advertised; `1W` is."""
    return {
        "supported_resolutions": list(SUPPORTED_RESOLUTIONS),
        "supports_search": True,
        "supports_group_request": False,
        "supports_marks": False,
        "supports_timescale_marks": False,
        "supports_time": True,
        "exchanges": [{"value": EXCHANGE, "name": EXCHANGE, "desc": "Korea Exchange"}],
        "symbols_types": [{"name": "Stock", "value": "stock"}],
    }


def _session_text(settings: Settings) -> str:
    # The library places a bar inside the session by its start time, and the session's end is
    # exclusive: the closing print's bar starts at the close (15:30), so the session runs one
    # minute past it.
    close = datetime.combine(date.min, settings.session_close) + timedelta(minutes=1)
    return f"{settings.session_open:%H%M}-{close:%H%M}"


def _years(first: int | None) -> tuple[int, int]:
    this_year = datetime.now(UTC).year
    start = datetime.fromtimestamp(first, UTC).year if first is not None else this_year
    return min(start, this_year), this_year + 1


@lru_cache(maxsize=32)
def _calendar_exceptions(
    first_year: int, last_year: int, session_open: dt_time, session_close: dt_time
) -> tuple[str, str]:
    """UDF `session_holidays` (weekdays XKRX does not trade) and `corrections` (trading days
    whose hours differ from the regular window, e.g. the year's first day opening at 10:00)."""
    calendar = get_calendar(session_open, session_close)
    start = int(datetime(first_year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(last_year + 1, 1, 1, tzinfo=UTC).timestamp())
    sessions = {s.day: s for s in calendar.sessions(start, end)}
    holidays: list[str] = []
    corrections: list[str] = []
    if not sessions:
        return "", ""
    # Only inside the calendar's known range: past its last session nothing is a holiday.
    day, last = min(sessions), max(sessions)
    while day <= last:
        session = sessions.get(day)
        if session is None:
            if day.weekday() < 5:
                holidays.append(f"{day:%Y%m%d}")
        else:
            opens = _kst_clock(session.open)
            closes = _kst_clock(session.close + 60)  # the closing print's minute, as above
            if (opens, closes) != (f"{session_open:%H%M}", _plus_minute(session_close)):
                corrections.append(f"{opens}-{closes}:{day:%Y%m%d}")
        day += timedelta(days=1)
    return ",".join(holidays), ";".join(corrections)


def _kst_clock(epoch: int) -> str:
    return f"{datetime.fromtimestamp(epoch + KST_OFFSET_S, UTC):%H%M}"


def _plus_minute(t: dt_time) -> str:
    return f"{datetime.combine(date.min, t) + timedelta(minutes=1):%H%M}"


def symbol_name(code: str, stored: str | None) -> str:
    """The stored name, else the built-in master's (engine.domain.krx), else the code."""
    return stored or SYMBOL_NAMES.get(code) or code


def udf_symbol_info(
    settings: Settings, symbol: str, name: str | None, first: int | None = None
) -> dict:
    """TradingView LibrarySymbolInfo, every field the UDF `symbols` call documents. Prices are
    whole KRW (pricescale 1) on the KRX tick table (variable_tick_size); daily bars are stamped
    00:00 UTC of the trading date."""
    holidays, corrections = _calendar_exceptions(
        *_years(first), settings.session_open, settings.session_close
    )
    return {
        "name": symbol,
        "ticker": symbol,
        "full_name": f"{EXCHANGE}:{symbol}",
        "description": symbol_name(symbol, name),
        "type": "stock",
        "exchange": EXCHANGE,
        "listed_exchange": EXCHANGE,
        "exchange-traded": EXCHANGE,
        "exchange-listed": EXCHANGE,
        "currency_code": "KRW",
        "timezone": TIMEZONE,
        "session": _session_text(settings),
        "session_holidays": holidays,
        "corrections": corrections,
        "format": "price",
        "minmov": 1,
        "minmov2": 0,
        "pointvalue": 1,
        "pricescale": 1,
        "variable_tick_size": variable_tick_size(),
        "has_intraday": True,
        "has_daily": True,
        "has_weekly_and_monthly": False,  # 1M is not served; the library builds W/M from 1D
        "supported_resolutions": list(SUPPORTED_RESOLUTIONS),
        "intraday_multipliers": ["1", "5", "15", "60"],
        "visible_plots_set": "ohlcv",
        "volume_precision": 0,
        "data_status": "streaming",
    }


def udf_search(known: list[dict], query: str, kind: str, exchange: str, limit: int) -> list[dict]:
    """Symbols with data whose code or name contains `query` (case-insensitive), codes first."""
    if (kind and kind != "stock") or (exchange and exchange != EXCHANGE):
        return []
    needle = query.strip().casefold()
    found = []
    for entry in sorted(known, key=lambda e: e["symbol"]):
        code = entry["symbol"]
        name = symbol_name(code, entry.get("name"))
        if needle in code.casefold() or needle in name.casefold():
            found.append(
                {
                    "symbol": code,
                    "full_name": f"{EXCHANGE}:{code}",
                    "description": name,
                    "exchange": EXCHANGE,
                    "ticker": code,
                    "type": "stock",
                }
            )
    found.sort(key=lambda item: not item["symbol"].startswith(needle.upper()))
    return found[:limit]
