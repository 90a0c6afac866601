"""The replica's hub through its Ray adapters (api.hub) without Ray: fake socket and recorder
handles (`.method.remote()`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from api.hub import RayBarSource, RayUpstream
from engine.domain.bars import LiveBar, MinuteBar
from engine.kis.delivery import Batch
from engine.kis.records import Trade
from engine.live.channels import CANDLE, TRADE, Channel
from engine.live.fanout import Outbox
from engine.live.hub import Hub

T0 = datetime(2025, 3, 12, 1, 0, 0, tzinfo=UTC)
CANDLE_A = Channel(CANDLE, "005930", "1m")


class Remote:
    """`handle.method.remote(*args)` → an awaitable, as on a Ray actor handle."""

    def __init__(self, target: object) -> None:
        self._target = target

    def __getattr__(self, name: str) -> object:
        method: Callable = getattr(self._target, name)

        class Method:
            @staticmethod
            def remote(*args: object) -> object:
                return method(*args)

        return Method


class FakeSocket:
    def __init__(self) -> None:
        self.batches: asyncio.Queue[Batch] = asyncio.Queue()
        self.subscribed: set = set()

    async def register(self, consumer_id: str) -> None:
        return None

    async def unregister(self, consumer_id: str) -> None:
        return None

    async def subscribe(self, consumer_id: str, regs: list) -> None:
        self.subscribed.update(regs)

    async def unsubscribe(self, consumer_id: str, regs: list) -> None:
        self.subscribed.difference_update(regs)

    async def next_batch(
        self,
        consumer_id: str,
        wait_s: float,
        max_records: int | None = None,
        min_interval_s: float = 0.0,
    ) -> Batch | None:
        try:
            return await asyncio.wait_for(self.batches.get(), wait_s)
        except TimeoutError:
            return None


class FakeRecorder:
    def __init__(self) -> None:
        self.seq = 0
        self.bars: dict[str, dict] = {}
        self.changed = asyncio.Condition()
        self.polls_in_flight = 0
        self.max_in_flight = 0
        self.polls = 0

    async def publish(self, symbol: str, bar: dict) -> None:
        async with self.changed:
            self.bars[symbol] = bar
            self.seq += 1
            self.changed.notify_all()

    async def forming_bars(self) -> dict:
        return dict(self.bars)

    async def forming_updates(self, after: int, wait_s: float) -> tuple[int, dict]:
        self.polls += 1
        self.polls_in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.polls_in_flight)
        try:
            async with self.changed:
                if self.seq <= after:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self.changed.wait_for(lambda: self.seq > after), wait_s
                        )
                return self.seq, dict(self.bars)
        finally:
            self.polls_in_flight -= 1


def bar(volume: int, close: int = 100, minute: int = 0) -> MinuteBar:
    start = T0.replace(second=0, microsecond=0) + timedelta(minutes=minute)
    return MinuteBar("005930", start, 90, 110, 80, close, volume)


def trade(price: int, volume: int) -> Trade:
    return Trade(
        "005930", T0, "20250312", "100000", price, "2", 100, 0.1, 70000.0, 70000, 71000, 69000,
        price + 10, price - 10, volume, volume, 0, 100.0, "1", "20", False, "0",
    )  # fmt: skip


async def candles_of(box: Outbox, within: float = 3.0) -> list[dict]:
    """The candle messages of the next wakeup that has any (other messages are skipped)."""
    deadline = asyncio.get_running_loop().time() + within
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        texts = await box.wait(left)
        candles = [m for m in map(json.loads, texts) if m.get("type") == "candle"]
        if candles:
            return candles
    return []


@pytest.fixture
async def socket() -> FakeSocket:
    return FakeSocket()


async def started(socket: FakeSocket, recorder: FakeRecorder | None) -> Hub:
    def resolve() -> object:
        if recorder is None:
            raise ValueError("Failed to look up actor with name 'recorder'")
        return Remote(recorder)

    hub = Hub(RayUpstream(lambda: Remote(socket)), None, RayBarSource(resolve), window_s=0.01)
    await hub.start()
    return hub


async def test_candles_are_the_recorders_bars_with_one_poll_per_replica(socket) -> None:
    recorder = FakeRecorder()
    await recorder.publish("005930", bar(1865))
    hub = await started(socket, recorder)
    try:
        boxes = [Outbox(f"c{n}") for n in range(3)]
        for n, box in enumerate(boxes):
            hub.attach(box, f"s{n}")
            await hub.subscribe(box, [CANDLE_A, Channel(TRADE, "005930")])
            first = await candles_of(box)  # the current bar at once, from forming_bars()
            assert first[0]["data"] == {**bar(1865).as_data(), "live": True}
            assert first[0] == {
                "type": "candle", "symbol": "005930", "interval": "1m", "data": first[0]["data"]
            }  # fmt: skip
        # Trades still flow, but build no candle: the recorder owns the bar.
        await socket.batches.put(Batch("hub", 1, (trade(100, 71),), (), 0))
        await recorder.publish("005930", bar(1900, close=101))
        for box in boxes:
            got = await candles_of(box)
            assert [m["data"]["volume"] for m in got] == [1900]
        await recorder.publish("005930", bar(5, minute=-1))  # an older minute never goes out
        await asyncio.sleep(0.2)
        assert all(not [t for t in box.take() if '"candle"' in t] for box in boxes)
        assert recorder.max_in_flight == 1  # one long-poll for three sockets
        assert hub.stats()["candle_source"] == "recorder"
        # No candle subscriber left: the long-poll stops.
        for box in boxes:
            await hub.unsubscribe(box, [CANDLE_A])
        await asyncio.sleep(2.5)  # an outstanding poll ends within FORMING_WAIT_S
        polls = recorder.polls
        await asyncio.sleep(1.0)
        assert recorder.polls == polls and recorder.polls_in_flight == 0
    finally:
        await hub.stop()


async def test_without_a_recorder_candles_are_built_from_trades_and_logged_once(
    socket, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await started(socket, None)
    try:
        with caplog.at_level(logging.WARNING, logger="engine.live.hub"):
            box = Outbox("c")
            hub.attach(box, "s")
            await hub.subscribe(box, [CANDLE_A])
            await socket.batches.put(Batch("hub", 1, (trade(100, 71),), (), 0))
            got = await candles_of(box)
            assert got[0]["data"]["volume"] == 71 and got[0]["data"]["live"] is True
            other = Outbox("d")
            hub.attach(other, "t")
            await hub.subscribe(other, [CANDLE_A])
            assert (await candles_of(other))[0]["data"]["volume"] == 71
        assert hub.stats()["candle_source"] == "trades"
        assert sum("no recorder actor" in r.getMessage() for r in caplog.records) == 1
    finally:
        await hub.stop()


class LiveRecorder(FakeRecorder):
    """A recorder whose builder (`forming_bars`) is ahead of its last publication, as between
    two flushes of the real one."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[str, dict] = {}

    async def forming_bars(self) -> dict:
        return {**self.bars, **self.live}


async def test_a_new_subscriber_gets_the_bar_of_now_not_the_one_held_from_before(socket) -> None:
    recorder = FakeRecorder()
    await recorder.publish("005930", bar(1865))
    hub = await started(socket, recorder)
    try:
        box = Outbox("c")
        hub.attach(box, "s")
        await hub.subscribe(box, [CANDLE_A])
        assert (await candles_of(box))[0]["data"]["volume"] == 1865
        await hub.unsubscribe(box, [CANDLE_A])
        await asyncio.sleep(2.5)  # the long-poll has stopped: nobody wants candles
        await recorder.publish("005930", bar(40, minute=1))  # the next minute began meanwhile
        await hub.subscribe(box, [CANDLE_A])
        first = (await candles_of(box))[0]["data"]
        assert (first["time"], first["volume"]) == (bar(40, minute=1).time, 40)
    finally:
        await hub.stop()


async def test_an_update_in_flight_never_takes_a_bars_volume_backwards(socket) -> None:
    recorder = LiveRecorder()
    await recorder.publish("005930", bar(6144))  # the last flush
    recorder.live["005930"] = bar(6200)  # trades the builder has counted since
    hub = await started(socket, recorder)
    try:
        box = Outbox("c")
        hub.attach(box, "s")
        await hub.subscribe(box, [CANDLE_A])
        volumes = [m["data"]["volume"] for m in await candles_of(box)]
        await asyncio.sleep(0.5)  # the first long-poll answers with the 6,144 publication
        volumes += [m["data"]["volume"] for m in map(json.loads, box.take())]
        await recorder.publish("005930", bar(6300))
        volumes += [m["data"]["volume"] for m in await candles_of(box)]
        assert volumes == [6200, 6300]
    finally:
        await hub.stop()


class StoredPart:
    """The candle service's `live_bars` over a fixed stored part of every bucket (the real
    roll-up is tested against /candles in tests/actors/test_candles.py)."""

    def __init__(self, volume: int, recorder: FakeRecorder) -> None:
        self.volume = volume
        self.recorder = recorder  # its publications reach the candle service too

    async def live_bars(
        self, symbol: str, intervals: list[str], one: MinuteBar | None
    ) -> dict[str, LiveBar]:
        one = one or self.recorder.bars[symbol]
        bucket = one.time - one.time % 300
        rolled = LiveBar(bucket, 85, one.high, 70, one.close, self.volume + one.volume)
        return {name: rolled for name in intervals}


async def test_coarser_channels_roll_the_minute_bar_up_and_never_step_back(socket) -> None:
    recorder = LiveRecorder()
    await recorder.publish("005930", bar(100))
    # The builder is in the next minute already, the minute before not yet written: the 5m bar
    # must come from the published bar (the database agrees with it), as /candles' does.
    recorder.live["005930"] = bar(7, minute=1)
    stored = StoredPart(1000, recorder)
    hub = Hub(
        RayUpstream(lambda: Remote(socket)),
        None,
        RayBarSource(lambda: Remote(recorder), lambda: Remote(stored)),
        window_s=0.01,
    )
    await hub.start()
    five = Channel(CANDLE, "005930", "5m")
    try:
        box = Outbox("c")
        hub.attach(box, "s")
        await hub.subscribe(box, [five, CANDLE_A])
        await asyncio.sleep(0.3)
        got = {m["interval"]: m["data"] for m in map(json.loads, box.take())}
        assert got["1m"] == {**bar(7, minute=1).as_data(), "live": True}
        assert got["5m"] == {
            "time": bar(0).time - bar(0).time % 300,
            "open": 85, "high": 110, "low": 70, "close": 100, "volume": 1100, "live": True,
        }  # fmt: skip
        recorder.live.clear()
        await recorder.publish("005930", bar(150, close=105, minute=1))
        await asyncio.sleep(0.3)  # the 1m message goes out first, the rolled-up one after
        got = {m["interval"]: m["data"]["volume"] for m in map(json.loads, box.take())}
        assert got == {"1m": 150, "5m": 1150}
        stored.volume = 900  # a stored minute the database has not taken yet: hold the bar
        await recorder.publish("005930", bar(160, close=106, minute=1))
        await asyncio.sleep(0.3)
        assert [m["interval"] for m in map(json.loads, box.take())] == ["1m"]
    finally:
        await hub.stop()


class GatedRecorder(FakeRecorder):
    """`forming_bars` answers only when its gate opens: a recorder slow to answer."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def forming_bars(self) -> dict:
        await self.gate.wait()
        return dict(self.bars)


async def test_the_ack_leads_the_data_of_the_channels_it_added(socket) -> None:
    """While a new subscription's current bar is fetched, trades of a channel another socket
    already streams keep flowing; none reaches the new socket before its `subscribed`."""
    recorder = GatedRecorder()
    await recorder.publish("005930", bar(1865))
    hub = await started(socket, recorder)
    try:
        streaming = Outbox("a")
        hub.attach(streaming, "sa")
        await hub.subscribe(streaming, [Channel(TRADE, "005930")])
        box = Outbox("b")
        hub.attach(box, "sb")
        ack = json.dumps({"type": "subscribed"})
        subscribing = asyncio.create_task(
            hub.subscribe(box, [CANDLE_A, Channel(TRADE, "005930")], ack)
        )
        await asyncio.sleep(0.1)  # the current bar is being fetched
        await socket.batches.put(Batch("hub", 1, (trade(100, 71),), (), 0))
        await asyncio.sleep(0.3)
        assert any('"trade"' in text for text in streaming.take())  # delivered meanwhile
        recorder.gate.set()
        await subscribing
        kinds = [json.loads(text)["type"] for text in box.take()]
        assert kinds[:2] == ["subscribed", "candle"], kinds
    finally:
        recorder.gate.set()
        await hub.stop()
