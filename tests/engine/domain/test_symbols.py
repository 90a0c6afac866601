"""One symbol rule: settings, the REST parser, the /ws channel parser and the upstream
registration accept and refuse the same codes."""

from __future__ import annotations

import pytest

from engine.candles.service import build_query
from engine.config import Settings
from engine.errors import BadRequestError, ConfigError, InvalidSymbolError
from engine.kis import tr
from engine.kis.registry import registration
from engine.live.channels import parse_channel

ACCEPTED = ["005930", "0126Z0", "Q500001"]
REFUSED = ["12345", "00593O0X", "005930\n", "q500001", "", "A-1234"]


def _settings(symbol: str) -> Settings:
    return Settings(_env_file=None, symbols=[symbol])


def _rest(symbol: str) -> str:
    return build_query(symbol, "1m", None, None, None, False, max_buckets=10).symbol


def _ws(symbol: str) -> str:
    return parse_channel(f"trade:{symbol}").symbol


def _upstream(symbol: str) -> str:
    return registration(tr.TRADE, symbol).tr_key


@pytest.mark.parametrize("symbol", ACCEPTED)
def test_settings_rest_ws_and_upstream_accept_the_same_codes(symbol: str) -> None:
    assert _settings(symbol).symbols == [symbol]
    assert _rest(symbol) == _ws(symbol) == _upstream(symbol) == symbol


@pytest.mark.parametrize("symbol", REFUSED)
def test_settings_rest_ws_and_upstream_refuse_the_same_codes(symbol: str) -> None:
    with pytest.raises((ConfigError, ValueError)):
        _settings(symbol)
    with pytest.raises(InvalidSymbolError):
        _rest(symbol)
    with pytest.raises(InvalidSymbolError):
        _ws(symbol)
    with pytest.raises(BadRequestError):
        _upstream(symbol)
