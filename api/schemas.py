"""Response models of the REST routes, for the OpenAPI document only: the bodies themselves are
built by the CandleActor (polars, serialized once) and the UDF helpers, so these models document
the contract of docs/candles-api.md and give Swagger UI real examples, without a second
validation pass on the hot path.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


def _example(value: dict) -> ConfigDict:
    return ConfigDict(json_schema_extra={"example": value})


CANDLE_EXAMPLE = {
    "time": 1707868800,
    "open": 73100,
    "high": 73300,
    "low": 73000,
    "close": 73200,
    "volume": 120345,
    "is_filled": False,
    "live": False,
}


class Candle(BaseModel):
    model_config = _example(CANDLE_EXAMPLE)

    time: int = Field(description="bucket start, epoch seconds (UTC)")
    open: float = Field(description="KRW; integers when every price of the response is whole")
    high: float
    low: float
    close: float
    volume: int
    is_filled: bool = Field(description="true: no trades in this session bucket, previous close")
    live: bool = Field(description="true: the bar still forming")


class CandleSeries(BaseModel):
    model_config = _example({"symbol": "005930", "interval": "5m", "candles": [CANDLE_EXAMPLE]})

    symbol: str
    interval: str
    candles: list[Candle] = Field(description="ascending, unique times")


class SymbolEntry(BaseModel):
    symbol: str
    name: str | None = Field(description="from the symbol master, null when unknown")
    first: int = Field(description="first 1-minute candle, epoch seconds")
    last: int = Field(description="last 1-minute candle, epoch seconds")


class SymbolList(BaseModel):
    model_config = _example(
        {
            "symbols": [
                {"symbol": "005930", "name": "삼성전자", "first": 1704157200, "last": 1735534200}
            ]
        }
    )

    symbols: list[SymbolEntry]


class UdfHistory(BaseModel):
    """UDF bars: columnar arrays when `s` is ok; `nextTime` with `no_data`."""

    model_config = _example(
        {
            "s": "ok",
            "t": [1707868800, 1707869100],
            "o": [73100, 73200],
            "h": [73300, 73300],
            "l": [73000, 73100],
            "c": [73200, 73150],
            "v": [120345, 98110],
        }
    )

    s: str = Field(description="ok, no_data or error")
    t: list[int] | None = None
    o: list[float] | None = None
    h: list[float] | None = None
    l: list[float] | None = None  # noqa: E741 - UDF's field name
    c: list[float] | None = None
    v: list[int] | None = None
    nextTime: int | None = None
    errmsg: str | None = None


def _not_null(schema: dict) -> dict:
    """`anyOf: [X, null]` → X: an optional query parameter is one that may be left out."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**kept[0], **rest}


def install_plain_parameters(app) -> None:
    """Swagger UI renders an `anyOf` parameter as a JSON editor holding `{}`, so "Try it out"
    sent `from={}` and got 400 INVALID_RANGE; a plain type leaves the field empty and unsent.

    Serve pickles the app, and FastAPI's "no example" sentinel does not survive that (it is
    compared by identity), so every parameter came back with `"example": {}`, which Swagger UI
    also sends. An empty object is never a real example of a query parameter: dropped."""
    documented = app.openapi

    def openapi() -> dict:
        schema = documented()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    parameter["schema"] = _not_null(parameter.get("schema", {}))
                    if parameter.get("example") == {}:
                        del parameter["example"]
        return schema

    app.openapi = openapi


HEALTH_EXAMPLE = {
    "status": "degraded",
    "problems": ["kis socket reconnecting (the app key is in use by another session (OPSP8996))"],
    "warnings": [],
    "database": {"reachable": True, "mode": "timescaledb"},
    "kis": {"state": "reconnecting", "registrations": 7, "live_registrations": 0},
    "recorder": {"status": "ok"},
    "sessions": {"state": "ok", "idle": 8, "leased": 3},
}
METRICS_EXAMPLE = 'kisray_http_requests_total{route="/candles/{symbol}",status="200"} 42.0\n'


class UdfConfig(BaseModel):
    model_config = _example(
        {
            "supported_resolutions": ["1", "5", "15", "60", "1D", "1W"],
            "supports_search": True,
            "supports_group_request": False,
            "supports_marks": False,
            "supports_timescale_marks": False,
            "supports_time": True,
            "exchanges": [{"value": "KRX", "name": "KRX", "desc": "Korea Exchange"}],
            "symbols_types": [{"name": "Stock", "value": "stock"}],
        }
    )

    supported_resolutions: list[str]
    supports_search: bool
    supports_group_request: bool
    supports_marks: bool
    supports_timescale_marks: bool
    supports_time: bool
    exchanges: list[dict[str, str]]
    symbols_types: list[dict[str, str]]


class UdfSearchResult(BaseModel):
    model_config = _example(
        {
            "symbol": "005930",
            "full_name": "KRX:005930",
            "description": "삼성전자",
            "exchange": "KRX",
            "ticker": "005930",
            "type": "stock",
        }
    )

    symbol: str
    full_name: str
    description: str
    exchange: str
    ticker: str
    type: str


class UdfSymbolInfo(BaseModel):
    """TradingView's LibrarySymbolInfo as the UDF `symbols` call returns it."""

    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "example": {
                "name": "005930",
                "ticker": "005930",
                "full_name": "KRX:005930",
                "description": "삼성전자",
                "type": "stock",
                "exchange": "KRX",
                "listed_exchange": "KRX",
                "exchange-traded": "KRX",
                "exchange-listed": "KRX",
                "currency_code": "KRW",
                "timezone": "Asia/Seoul",
                "session": "0900-1531",
                "session_holidays": "20240209,20240212",
                "corrections": "1000-1531:20240102",
                "format": "price",
                "minmov": 1,
                "minmov2": 0,
                "pointvalue": 1,
                "pricescale": 1,
                "variable_tick_size": "1 2000 5 5000 10 20000 50 50000 100 200000 500 500000 1000",
                "has_intraday": True,
                "has_daily": True,
                "has_weekly_and_monthly": False,
                "supported_resolutions": ["1", "5", "15", "60", "1D", "1W"],
                "intraday_multipliers": ["1", "5", "15", "60"],
                "visible_plots_set": "ohlcv",
                "volume_precision": 0,
                "data_status": "streaming",
            }
        },
    )

    name: str
    ticker: str
    full_name: str
    description: str
    type: str
    exchange: str
    listed_exchange: str
    exchange_traded: str = Field(alias="exchange-traded")
    exchange_listed: str = Field(alias="exchange-listed")
    currency_code: str
    timezone: str
    session: str = Field(description="KST; ends one minute after the close for the 15:30 print")
    session_holidays: str = Field(description="XKRX weekdays without trading, YYYYMMDD")
    corrections: str = Field(description="days with other hours, e.g. the 10:00 first open")
    format: str
    minmov: int
    minmov2: int
    pointvalue: int
    pricescale: int
    variable_tick_size: str = Field(description="KRX tick table: tick, bound, tick, …")
    has_intraday: bool
    has_daily: bool
    has_weekly_and_monthly: bool
    supported_resolutions: list[str]
    intraday_multipliers: list[str]
    visible_plots_set: str
    volume_precision: int
    data_status: str
