"""The UDF `config`, `symbols` and `search` bodies against TradingView's documented fields,
built in-process (no Ray): one assertion per field the adapter and the library read."""

from __future__ import annotations

import re
from datetime import date

import pytest

from api.candles_routes import udf_config, udf_search, udf_symbol_info
from engine.config import load_settings
from engine.domain.intervals import parse_resolution
from engine.domain.krx import SYMBOL_NAMES, TICK_TABLE, TOP_TICK, tick_size
from engine.sim.market import DEFAULT_INSTRUMENTS

FIRST_2024 = 1704067200  # 2024-01-01 00:00 UTC: the symbol's first candle


@pytest.fixture(scope="module")
def info() -> dict:
    return udf_symbol_info(load_settings(), "005930", None, FIRST_2024)


def test_config_supports_search_and_only_served_resolutions() -> None:
    config = udf_config()
    assert config["supports_search"] or config["supports_group_request"]
    assert not (config["supports_search"] and config["supports_group_request"])
    for resolution in config["supported_resolutions"]:
        parse_resolution(resolution)  # raises for one /udf/history would refuse
    assert "1M" not in config["supported_resolutions"]
    assert config["exchanges"][0]["value"] == "KRX"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("name", "005930"),
        ("ticker", "005930"),
        ("full_name", "KRX:005930"),
        ("description", "삼성전자"),
        ("type", "stock"),
        ("exchange", "KRX"),
        ("listed_exchange", "KRX"),
        ("exchange-traded", "KRX"),
        ("exchange-listed", "KRX"),
        ("currency_code", "KRW"),
        ("timezone", "Asia/Seoul"),
        ("format", "price"),
        ("pricescale", 1),
        ("minmov", 1),
        ("minmov2", 0),
        ("pointvalue", 1),
        ("has_intraday", True),
        ("has_daily", True),
        ("has_weekly_and_monthly", False),
        ("visible_plots_set", "ohlcv"),
        ("volume_precision", 0),
        ("data_status", "streaming"),
    ],
)
def test_symbol_info_field(info: dict, field: str, expected: object) -> None:
    assert info[field] == expected


def test_session_covers_the_closing_print(info: dict) -> None:
    # Bars are placed by start time and the session end is exclusive: the 15:30 bar needs 1531.
    assert info["session"] == "0900-1531"


def test_session_holidays_come_from_xkrx(info: dict) -> None:
    holidays = info["session_holidays"].split(",")
    assert all(re.fullmatch(r"20\d{6}", day) for day in holidays)
    assert "20240209" in holidays and "20240212" in holidays  # Lunar New Year 2024
    assert "20241231" in holidays  # the year-end closing day
    assert "20240208" not in holidays  # a trading day
    assert all(date(int(d[:4]), int(d[4:6]), int(d[6:])).weekday() < 5 for d in holidays)
    assert min(holidays) >= "20240101"


def test_corrections_carry_the_late_first_open(info: dict) -> None:
    assert "1000-1531:20240102" in info["corrections"].split(";")


def test_variable_tick_size_is_the_krx_table(info: dict) -> None:
    values = [int(v) for v in info["variable_tick_size"].split()]
    ticks, bounds = values[0::2], values[1::2]
    assert ticks == [tick for _, tick in TICK_TABLE] + [TOP_TICK]
    assert bounds == [bound for bound, _ in TICK_TABLE]
    assert tick_size(71_000) == 100 and tick_size(1_999) == 1 and tick_size(500_000) == 1_000


def test_resolutions_are_served_and_intraday_multipliers_among_them(info: dict) -> None:
    for resolution in info["supported_resolutions"]:
        parse_resolution(resolution)
    assert set(info["intraday_multipliers"]) <= set(info["supported_resolutions"])


def test_master_names_match_the_simulators_instruments() -> None:
    assert {code: i.name for code, i in DEFAULT_INSTRUMENTS.items()} == SYMBOL_NAMES


def test_stored_names_win_and_unknown_codes_describe_themselves() -> None:
    settings = load_settings()
    assert udf_symbol_info(settings, "005930", "Samsung", FIRST_2024)["description"] == "Samsung"
    assert udf_symbol_info(settings, "900100", None, FIRST_2024)["description"] == "900100"


def test_search_by_code_or_name_with_the_documented_items() -> None:
    known = [{"symbol": code, "name": None} for code in ("000660", "005930", "005380")]
    by_name = udf_search(known, "삼성", "", "", 30)
    assert by_name == [
        {
            "symbol": "005930",
            "full_name": "KRX:005930",
            "description": "삼성전자",
            "exchange": "KRX",
            "ticker": "005930",
            "type": "stock",
        }
    ]
    assert [i["symbol"] for i in udf_search(known, "0053", "", "", 30)] == ["005380"]
    assert [i["symbol"] for i in udf_search(known, "sk", "stock", "KRX", 30)] == ["000660"]
    assert len(udf_search(known, "", "", "", 2)) == 2
    assert udf_search(known, "", "index", "", 30) == []
    assert udf_search(known, "", "", "NYSE", 30) == []
