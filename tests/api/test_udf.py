"""The TradingView UDF datafeed routes through Serve (data loaded by test_candles_api)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.api.test_candles_api import OTHER, SYMBOL, kst, loaded_client


@pytest.fixture(scope="module")
def api(serve_url: str, migrated_url: str) -> Iterator[httpx.Client]:
    yield from loaded_client(serve_url, migrated_url)


def test_config_and_time(api) -> None:
    config = api.get("/udf/config").json()
    assert "1D" in config["supported_resolutions"] and config["supports_time"] is True
    # The UDF adapter refuses to start unless one of the two is true.
    assert config["supports_search"] is True and config["supports_group_request"] is False
    now = int(api.get("/udf/time").text)
    assert abs(now - datetime.now(UTC).timestamp()) < 60


def test_symbol_info(api) -> None:
    info = api.get("/udf/symbols", params={"symbol": f"KRX:{SYMBOL}"}).json()
    assert info["ticker"] == SYMBOL and info["timezone"] == "Asia/Seoul"
    assert info["session"] == "0900-1531"
    assert info["description"] == SYMBOL  # outside the built-in master: its code
    unknown = api.get("/udf/symbols", params={"symbol": "999990"})
    assert unknown.status_code == 404
    assert unknown.json()["s"] == "error" and unknown.json()["error"]["code"] == "NO_DATA_FOUND"


def test_history_columns(api) -> None:
    params = {
        "symbol": OTHER,
        "resolution": "60",
        "from": kst(2023, 6, 7, 9),
        "to": kst(2023, 6, 7, 12),
    }
    body = api.get("/udf/history", params=params).json()
    assert body["s"] == "ok"
    assert body["t"] == [kst(2023, 6, 7, h) for h in (9, 10, 11)]
    assert all(len(body[k]) == 3 for k in "ohlcv")
    assert all(body["l"][i] <= min(body["o"][i], body["c"][i]) for i in range(3))


def test_history_daily_bars_at_utc_midnight_and_countback(api) -> None:
    params = {
        "symbol": OTHER,
        "resolution": "1D",
        "from": kst(2023, 6, 15, 9),
        "to": int(datetime(2023, 6, 17, tzinfo=UTC).timestamp()),
        "countback": 4,
    }
    body = api.get("/udf/history", params=params).json()
    # countback outranks from: 4 bars ending at `to`, even from before `from`.
    assert [datetime.fromtimestamp(t, UTC).day for t in body["t"]] == [13, 14, 15, 16]
    assert all(datetime.fromtimestamp(t, UTC).hour == 0 for t in body["t"])


def test_history_no_data_points_back(api) -> None:
    params = {
        "symbol": OTHER,
        "resolution": "5",
        "from": kst(2023, 6, 17, 0),
        "to": kst(2023, 6, 19, 0),
    }
    body = api.get("/udf/history", params=params).json()
    assert body == {"s": "no_data", "nextTime": kst(2023, 6, 16, 15, 30)}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "005930", "resolution": "2D"}, "INVALID_INTERVAL"),
        ({"symbol": "bad!", "resolution": "5"}, "INVALID_SYMBOL"),
    ],
)
def test_history_errors_speak_udf_and_the_envelope(api, params, code) -> None:
    reply = api.get("/udf/history", params=params)
    assert reply.status_code == 400
    body = reply.json()
    assert body["s"] == "error" and body["errmsg"]
    assert body["error"]["code"] == code


def test_history_missing_resolution(api: httpx.Client) -> None:
    reply = api.get("/udf/history", params={"symbol": SYMBOL})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "INVALID_INTERVAL"


def test_adapter_start_up_sequence(api: httpx.Client) -> None:
    """The calls the UDF adapter makes when a chart opens: config, time, search, symbols
    (resolve), history; every one answers what the adapter reads."""
    config = api.get("/udf/config").json()
    assert int(api.get("/udf/time").text) > 0
    found = api.get("/udf/search", params={"query": SYMBOL[:4], "type": "", "exchange": ""})
    assert found.status_code == 200
    hit = next(item for item in found.json() if item["symbol"] == SYMBOL)
    assert hit["full_name"] == f"KRX:{SYMBOL}" and hit["exchange"] == "KRX"
    info = api.get("/udf/symbols", params={"symbol": hit["full_name"]}).json()
    assert set(info["supported_resolutions"]) <= set(config["supported_resolutions"])
    for resolution in info["supported_resolutions"]:
        reply = api.get(
            "/udf/history",
            params={
                "symbol": info["ticker"],
                "resolution": resolution,
                "countback": 5,
                "to": kst(2023, 6, 17, 0),
            },
        )
        assert reply.status_code == 200, (resolution, reply.text)
        assert reply.json()["s"] == "ok", resolution
    assert api.get("/udf/search", params={"query": "no such name"}).json() == []
    assert api.get("/udf/search", params={"query": "", "type": "futures"}).json() == []
