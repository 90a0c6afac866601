"""Channel parsing, the registrations behind channels, window coalescing and the outbox bound."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from engine.domain.bars import MinuteBar
from engine.errors import BadRequestError, InvalidIntervalError, InvalidSymbolError
from engine.kis import tr
from engine.kis.records import BookSnapshot, Trade
from engine.kis.registry import Registration
from engine.live.channels import (
    BOOK,
    CANDLE,
    TRADE,
    Channel,
    WindowCoalescer,
    candle_message,
    parse_channel,
    parse_channels,
    registrations_for,
)
from engine.live.fanout import FanoutIndex, Outbox

T0 = datetime(2025, 3, 12, 1, 0, 0, tzinfo=UTC)


def trade(symbol: str, price: int, volume: int = 10, at: float = 0.0, cum: int = 0) -> Trade:
    ts = T0 + timedelta(seconds=at)
    return Trade(
        symbol, ts, "20250312", "100000", price, "2", 100, 0.1, 70000.0, 70000, 71000, 69000,
        price + 10, price - 10, volume, cum, 0, 100.0, "1", "20", False, "0",
    )  # fmt: skip


def book(symbol: str, best_ask: int) -> BookSnapshot:
    asks = tuple(best_ask + 10 * i for i in range(10))
    bids = tuple(best_ask - 10 * (i + 1) for i in range(10))
    sizes = tuple(range(1, 11))
    return BookSnapshot(
        symbol, T0, "20250312", "100000", "0", asks, bids, sizes, sizes, 55, 55, 0, 0, 1
    )


def test_parse_channel_accepts_the_contract_names() -> None:
    assert parse_channel("trade:005930") == Channel(TRADE, "005930")
    assert parse_channel("book:005930") == Channel(BOOK, "005930")
    assert parse_channel("candle:005930:1m") == Channel(CANDLE, "005930", "1m")
    assert str(parse_channel("candle:005930:1m")) == "candle:005930:1m"
    # Every interval /candles serves, by its canonical name.
    assert parse_channel("candle:005930:5m") == Channel(CANDLE, "005930", "5m")
    assert str(parse_channel("candle:005930:60m")) == "candle:005930:1h"
    assert str(parse_channel("candle:005930:1D")) == "candle:005930:1d"
    assert parse_channel("candle:005930:1w").interval == "1w"


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("tick:005930", BadRequestError),
        ("trade", BadRequestError),
        ("trade:005930:1m", BadRequestError),
        ("candle:005930", BadRequestError),
        ("trade:59", InvalidSymbolError),
        ("book:00593$", InvalidSymbolError),
        ("candle:005930:7m", InvalidIntervalError),
        ("candle:005930:2d", InvalidIntervalError),
        (42, BadRequestError),
        ("", BadRequestError),
    ],
)
def test_parse_channel_rejects_with_a_typed_error(name: object, error: type) -> None:
    with pytest.raises(error):
        parse_channel(name)


def test_parse_channels_is_all_or_nothing_and_dedupes() -> None:
    got = parse_channels(["trade:005930", "trade:005930", "book:000660"])
    assert got == (Channel(TRADE, "005930"), Channel(BOOK, "000660"))
    with pytest.raises(InvalidSymbolError):
        parse_channels(["trade:005930", "trade:x"])
    for bad in ([], "trade:005930", None):
        with pytest.raises(BadRequestError):
            parse_channels(bad)


def test_candles_and_trades_share_one_registration() -> None:
    regs = registrations_for(parse_channels(["trade:005930", "candle:005930:1m", "book:005930"]))
    assert regs == {Registration(tr.TRADE, "005930"), Registration(tr.BOOK, "005930")}


def test_window_renders_each_channel_once_trades_batched_book_latest() -> None:
    window = WindowCoalescer()
    window.add([trade("005930", 100, cum=1), book("005930", 100), trade("005930", 101, cum=2)])
    window.add([book("005930", 105), trade("000660", 50)])
    wanted = {Channel(TRADE, "005930"), Channel(BOOK, "005930")}
    out = window.drain(wanted)
    assert set(out) == wanted  # 000660 is not wanted: filtered at the source
    trades = json.loads(out[Channel(TRADE, "005930")])
    assert trades["type"] == "trade" and trades["symbol"] == "005930"
    assert [t["cum_volume"] for t in trades["data"]] == [1, 2]
    books = json.loads(out[Channel(BOOK, "005930")])
    assert books["data"]["asks"][0] == 105
    assert window.drain(wanted) == {}  # the window was reset


def test_forming_candle_follows_trades_and_rolls_over() -> None:
    window = WindowCoalescer()
    want = {Channel(CANDLE, "005930", "1m")}
    window.add([trade("005930", 100, 5), trade("005930", 120, 5, at=10), trade("005930", 90, 1)])
    bar = json.loads(window.drain(want)[Channel(CANDLE, "005930", "1m")])["data"]
    assert bar == {
        "time": int(T0.timestamp()), "open": 100, "high": 120, "low": 90, "close": 90,
        "volume": 11, "live": True,
    }  # fmt: skip
    window.add([trade("005930", 130, 2, at=61)])
    bar = json.loads(window.drain(want)[Channel(CANDLE, "005930", "1m")])["data"]
    assert (bar["time"], bar["open"], bar["volume"]) == (int(T0.timestamp()) + 60, 130, 2)
    window.add([trade("005930", 1, 1, at=5)])  # a late trade of the closed bar is ignored
    assert window.drain(want) == {}
    assert json.loads(window.latest_candle("005930") or "")["data"]["close"] == 130


def test_recorder_sourced_window_builds_no_candle_from_trades() -> None:
    window = WindowCoalescer(candles_from_trades=False)  # the hub's mode while a recorder runs
    want = {Channel(CANDLE, "005930", "1m"), Channel(TRADE, "005930")}
    window.add([trade("005930", 100, 71)])
    assert set(window.drain(want)) == {Channel(TRADE, "005930")}
    assert window.latest_candle("005930") is None


def test_candle_message_is_the_contract_shape_of_a_recorder_bar() -> None:
    bar = MinuteBar("005930", datetime.fromtimestamp(1741741200, UTC), 1, 3, 1, 2, 1865)
    data = {"time": 1741741200, "open": 1, "high": 3, "low": 1, "close": 2, "volume": 1865}
    assert json.loads(candle_message("005930", bar)) == {
        "type": "candle", "symbol": "005930", "interval": "1m", "data": {**data, "live": True},
    }  # fmt: skip


async def test_outbox_keeps_trades_in_order_and_coalesces_snapshots() -> None:
    box = Outbox("c1")
    b, t = Channel(BOOK, "005930"), Channel(TRADE, "005930")
    box.offer(t, "t1")
    box.offer(b, "b1")
    box.offer(t, "t2")
    box.offer(b, "b2")
    assert await box.wait(0.1) == ["t1", "t2", "b2"]
    assert box.coalesced == 1
    assert await box.wait(0.01) == []


def test_outbox_overflow_is_flagged_and_frees_memory() -> None:
    box = Outbox("slow", max_bytes=100)
    t = Channel(TRADE, "005930")
    for _ in range(10):
        box.offer(t, "x" * 30)
    assert box.overflowed and box.pending_bytes == 0
    assert box.high_water_bytes <= 100 + 30
    box.offer(t, "more")  # ignored once overflowed
    assert box.take() == []


def test_index_filters_and_cleans_up() -> None:
    index = FanoutIndex()
    a, b = Outbox("a"), Outbox("b")
    t1, t2 = Channel(TRADE, "005930"), Channel(TRADE, "000660")
    index.subscribe(a, [t1, t2])
    index.subscribe(b, [t1])
    assert index.publish({t1: "one", t2: "two"}) == 3
    assert a.take() == ["one", "two"] and b.take() == ["one"]
    index.unsubscribe(a, [t2])
    assert index.wanted() == {t1}
    index.remove(a)
    index.remove(b)
    assert index.wanted() == frozenset() and len(index) == 0
