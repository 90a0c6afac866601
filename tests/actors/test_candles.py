"""The CandleActor on the session's Ray cluster: series, the live forming bar, symbols."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import asyncpg
import pytest
import ray

from actors.candles import CandleActor
from engine.candles.service import build_query
from engine.candles.store import upsert_minute_bars
from engine.domain.bars import MinuteBar
from engine.errors import NoDataFoundError
from engine.history.sample_data import synthetic_minute_bars
from engine.storage.migrate import migrate

SYMBOL = "035420"


def kst(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) - 9 * 3600


LAST_PRINT = kst(2024, 3, 7, 15, 30)


@pytest.fixture(scope="module")
async def actor(ray_cluster, make_database):
    url = make_database()
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        bars = synthetic_minute_bars([SYMBOL], date(2024, 3, 6), date(2024, 3, 7), seed=5)
        await upsert_minute_bars(conn, bars)
    finally:
        await conn.close()
    handle = CandleActor.remote(url)
    assert await handle.ready.remote()
    yield handle
    ray.kill(handle)


def forming(minute: int, close: int, volume: int = 3) -> MinuteBar:
    """The recorder's forming bar of `minute` (epoch seconds)."""
    return MinuteBar(SYMBOL, datetime.fromtimestamp(minute, UTC), 1000, 1010, 990, close, volume)


def query(interval: str, start=None, end=None, limit=None, symbol=SYMBOL):
    return build_query(symbol, interval, start, end, limit, True, max_buckets=20_000)


async def test_candles_json_matches_the_contract(actor) -> None:
    body = json.loads(await actor.candles_json.remote(query("5m", limit=3)))
    assert body["symbol"] == SYMBOL and body["interval"] == "5m"
    candles = body["candles"]
    # 15:20 and 15:25 are the closing call: no trades, not expected.
    assert [c["time"] for c in candles] == [LAST_PRINT - 1200, LAST_PRINT - 900, LAST_PRINT]
    first = candles[0]
    assert set(first) >= {"time", "open", "high", "low", "close", "volume", "is_filled"}
    assert isinstance(first["open"], int)  # KRW prices go out as integers
    assert first["is_filled"] is False


async def test_forming_bar_is_merged_and_marked_live(actor) -> None:
    minute = LAST_PRINT + 60
    stored_day = json.loads(await actor.candles_json.remote(query("1d", limit=1)))
    bar = forming(minute, close=1005)
    await actor.update_forming_bar.remote(SYMBOL, bar)
    assert (await actor.forming_bar.remote(SYMBOL)).time == minute
    # An older minute arriving late does not replace the newer one.
    await actor.update_forming_bar.remote(SYMBOL, forming(minute - 60, close=1005))
    assert (await actor.forming_bar.remote(SYMBOL)).time == minute
    try:
        body = json.loads(await actor.candles_json.remote(query("1m", limit=2)))
        last = body["candles"][-1]
        assert (last["time"], last["close"], last["live"], last["is_filled"]) == (
            minute,
            1005,
            True,
            False,
        )
        assert body["candles"][0]["live"] is False
        # Rolled up into the day's bar: same bucket, volume added, close from the forming bar.
        await actor.update_forming_bar.remote(SYMBOL, forming(minute, close=1007))
        live_day = json.loads(await actor.candles_json.remote(query("1d", limit=1)))
        (before,), (after,) = stored_day["candles"], live_day["candles"]
        assert after["time"] == before["time"] == kst(2024, 3, 7, 9, 0)
        assert after["live"] is True and after["close"] == 1007
        assert after["volume"] == before["volume"] + 3
    finally:
        await actor.update_forming_bar.remote(SYMBOL, None)
    assert await actor.forming_bar.remote(SYMBOL) is None


async def test_no_data_and_udf(actor) -> None:
    with pytest.raises(NoDataFoundError):
        await actor.candles_json.remote(query("1m", symbol="999999"))
    udf = await actor.udf_history.remote(query("1h", kst(2024, 3, 7, 9), kst(2024, 3, 7, 12)))
    assert udf["s"] == "ok"
    assert udf["t"] == [kst(2024, 3, 7, h) for h in (9, 10, 11)]
    assert len(udf["o"]) == len(udf["c"]) == len(udf["v"]) == 3
    weekend = await actor.udf_history.remote(query("1h", kst(2024, 3, 9, 0), kst(2024, 3, 10, 0)))
    assert weekend == {"s": "no_data", "nextTime": LAST_PRINT - LAST_PRINT % 3600}


async def test_symbols_lists_first_and_last_candle(actor) -> None:
    (entry,) = await actor.symbols.remote()
    assert entry["symbol"] == SYMBOL
    assert entry["first"] == kst(2024, 3, 6, 9, 0)
    assert entry["last"] == LAST_PRINT


async def test_live_bars_are_the_live_rows_of_candles_at_every_interval(actor) -> None:
    """The `candle:SYM:INTERVAL` channels and /candles roll the forming minute up alike, and a
    forming minute the recorder already wrote (an idle symbol's bar) is not counted twice."""
    stored_day = json.loads(await actor.candles_json.remote(query("1d", limit=1)))["candles"][0]
    stored_min = json.loads(await actor.candles_json.remote(query("1m", limit=1)))["candles"][0]
    assert stored_min["time"] == LAST_PRINT
    bar = forming(LAST_PRINT, close=1005)
    await actor.update_forming_bar.remote(SYMBOL, bar)
    intervals = ["1m", "3m", "5m", "30m", "1h", "4h", "1d", "1w"]
    try:
        live = await actor.live_bars.remote(SYMBOL, intervals)
        assert list(live) == intervals
        for name in intervals:
            (row,) = json.loads(await actor.candles_json.remote(query(name, limit=1)))["candles"]
            assert row.pop("live") is True and row.pop("is_filled") is False
            assert row == live[name].as_data(), name
        assert live["1m"].as_data() == bar.as_data()
        assert live["1d"].time == kst(2024, 3, 7, 9, 0)  # the KST date at 00:00 UTC
        assert live["1d"].volume == stored_day["volume"] - stored_min["volume"] + 3
        # The bar the caller shows wins over the one held here.
        shown = await actor.live_bars.remote(SYMBOL, ["1d"], forming(LAST_PRINT, 1005, volume=5))
        assert shown["1d"].volume == live["1d"].volume + 2
    finally:
        await actor.update_forming_bar.remote(SYMBOL, None)
    assert await actor.live_bars.remote(SYMBOL, ["5m"]) == {}


async def test_in_the_demo_stack_gap_fill_stops_at_the_simulators_now(
    ray_cluster, make_database
) -> None:
    """`kisray up` with the simulator sets KISRAY_MARKET_CLOCK=sim: the candle service fills
    today's simulated session up to the simulator's present, not the wall clock's."""
    from tests.engine.conftest import running_sim

    url = make_database()
    await migrate(url)
    sparse = "900500"
    conn = await asyncpg.connect(url)
    try:
        bars = [
            MinuteBar(
                sparse, datetime.fromtimestamp(kst(2024, 3, 8, 9, m), UTC), 100, 101, 99, 100, 5
            )
            for m in (0, 5)
        ]
        await upsert_minute_bars(conn, bars)
    finally:
        await conn.close()
    async with running_sim(start=datetime(2024, 3, 8, 10, 0, 30)) as sim:
        env = {"KISRAY_MARKET_CLOCK": "sim", "KISRAY_SIM_PORT": str(sim.port)}
        handle = CandleActor.options(runtime_env={"env_vars": env}).remote(url)
        try:
            q = query("1m", kst(2024, 3, 8, 9, 0), kst(2024, 3, 8, 11, 0), symbol=sparse)
            candles = json.loads(await handle.candles_json.remote(q))["candles"]
        finally:
            ray.kill(handle)
    assert candles[-1]["time"] == kst(2024, 3, 8, 10, 0)  # the simulator's minute, filled
    assert [c["is_filled"] for c in candles[:6]] == [False, True, True, True, True, False]
