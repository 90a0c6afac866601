"""What the candle and UDF routes of the ingress need besides the CandleActor: request parsing
into a CandleQuery, and the TradingView UDF datafeed's static descriptions.

The routes themselves are methods of `api.app.KisrayIngress` (Serve's ingress class).
"""

from __future__ import annotations

from engine.chart import CandleQuery, build_query
from engine.config import Settings
from engine.intervals import SUPPORTED_RESOLUTIONS, parse_resolution

EXCHANGE = "KRX"
TIMEZONE = "Asia/Seoul"


def candle_query(
    settings: Settings,
    symbol: str,
    interval: str,
    start: str | None,
    end: str | None,
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
    return {
        "supported_resolutions": list(SUPPORTED_RESOLUTIONS),
        "supports_search": False,
        "supports_group_request": False,
        "supports_marks": False,
        "supports_timescale_marks": False,
        "supports_time": True,
        "exchanges": [{"value": EXCHANGE, "name": "Korea Exchange", "desc": "Korea Exchange"}],
        "symbols_types": [{"name": "Stock", "value": "stock"}],
    }


def _session_text(settings: Settings) -> str:
    return f"{settings.session_open:%H%M}-{settings.session_close:%H%M}"


def udf_symbol_info(settings: Settings, symbol: str, name: str | None) -> dict:
    """TradingView SymbolInfo. Daily bars are stamped 00:00 UTC of the trading date."""
    return {
        "name": symbol,
        "ticker": symbol,
        "description": name or symbol,
        "type": "stock",
        "exchange": EXCHANGE,
        "listed_exchange": EXCHANGE,
        "timezone": TIMEZONE,
        "session": _session_text(settings),
        "minmov": 1,
        "pricescale": 1,
        "has_intraday": True,
        "has_daily": True,
        "has_weekly_and_monthly": True,
        "supported_resolutions": list(SUPPORTED_RESOLUTIONS),
        "intraday_multipliers": ["1", "5", "15", "60"],
        "volume_precision": 0,
        "data_status": "streaming",
    }
