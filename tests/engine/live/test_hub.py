"""The hub's core against in-process fakes of its three ports (engine.live.ports): no Ray."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from engine.domain.bars import LiveBar, MinuteBar
from engine.errors import UnknownConsumerError
from engine.kis.delivery import Batch
from engine.kis.records import Trade
from engine.kis.registry import Registration
from engine.live import hub as hub_module
from engine.live.channels import CANDLE, TRADE, Channel, parse_channels
from engine.live.fanout import Outbox
from engine.live.hub import SPARE_LEASES, Hub
from engine.live.ports import (
    LeaseRequest,
    PoolLostError,
    PoolRestartingError,
    UpstreamLostError,
    UpstreamRestartingError,
)

T0 = datetime(2025, 3, 12, 1, 0, 0, tzinfo=UTC)
TRADE_A = Channel(TRADE, "005930")
CANDLE_A = Channel(CANDLE, "005930", "1m")
ACK = json.dumps({"type": "subscribed"})


class FakeUpstream:
    """Batches (or an exception to raise instead) come from `batches`; calls are recorded."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[Batch | Exception] = asyncio.Queue()
        self.calls: list[tuple[object, ...]] = []

    async def register(self, consumer_id: str) -> None:
        self.calls.append(("register",))

    async def unregister(self, consumer_id: str) -> None:
        self.calls.append(("unregister",))

    async def subscribe(self, consumer_id: str, regs: list[Registration]) -> None:
        self.calls.append(("subscribe", *regs))

    async def unsubscribe(self, consumer_id: str, regs: list[Registration]) -> None:
        self.calls.append(("unsubscribe", *regs))

    def pull(
        self, consumer_id: str, wait_s: float, min_interval_s: float
    ) -> Awaitable[Batch | None]:
        return asyncio.ensure_future(self._next(wait_s))  # under way now, as the port says

    async def _next(self, wait_s: float) -> Batch | None:
        try:
            item = await asyncio.wait_for(self.batches.get(), wait_s)
        except TimeoutError:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    async def relocate(self) -> None:
        self.calls.append(("relocate",))


@dataclass(frozen=True)
class FakeLease:
    session_id: str


class FakePool:
    def __init__(self) -> None:
        self.failures: list[Exception] = []  # raised by the next calls, in order
        self.lost: set[str] = set()  # what renew reports lost
        self.renewed: list[list[str]] = []
        self.released: list[tuple[object, ...]] = []
        self.relocations = 0
        self.made = 0

    async def acquire(self, request: LeaseRequest) -> FakeLease:
        if self.failures:
            raise self.failures.pop(0)
        self.made += 1
        return FakeLease(request.session_id or request.resume or f"spare-{self.made}")

    async def adopt(self, session_id: str, replica_id: str, channels: list[Channel]) -> FakeLease:
        return FakeLease(session_id)

    async def release(
        self, session_id: str, park: bool, channels: tuple[Channel, ...] | None, replica_id: str
    ) -> None:
        self.released.append((session_id, park, channels, replica_id))

    async def renew(self, replica_id: str, session_ids: list[str]) -> list[str]:
        self.renewed.append(list(session_ids))
        return [s for s in session_ids if s in self.lost]

    async def relocate(self) -> None:
        self.relocations += 1


class FakeBars:
    """A recorder holding `bars`; `forming_bars` answers once `gate` is open."""

    def __init__(self, bars: dict[str, MinuteBar]) -> None:
        self.bars = bars
        self.gate = asyncio.Event()
        self.gate.set()

    async def locate(self) -> None:
        return None

    async def forming_bars(self) -> dict[str, MinuteBar]:
        await self.gate.wait()
        return dict(self.bars)

    async def forming_updates(self, after: int, wait_s: float) -> tuple[int, dict[str, MinuteBar]]:
        await asyncio.sleep(wait_s)  # nothing new
        return after, {}

    async def live_bars(
        self, symbol: str, intervals: list[str], bar: MinuteBar | None
    ) -> dict[str, LiveBar]:
        return {}


def bar(volume: int) -> MinuteBar:
    return MinuteBar("005930", T0.replace(second=0, microsecond=0), 90, 110, 80, 100, volume)


def trades(volume: int) -> Batch:
    t = Trade(
        "005930", T0, "20250312", "100000", 100, "2", 100, 0.1, 70000.0, 70000, 71000, 69000,
        110, 90, volume, volume, 0, 100.0, "1", "20", False, "0",
    )  # fmt: skip
    return Batch("hub", 1, (t,), (), 0)


def run(first_cum: int, count: int, symbol: str = "005930") -> list[Trade]:
    """`count` consecutive trades of one share each, after the one with cum_volume first_cum."""
    (proto,) = trades(1).records
    assert isinstance(proto, Trade)
    return [
        proto._replace(symbol=symbol, volume=1, cum_volume=first_cum + i)
        for i in range(1, count + 1)
    ]


async def until(condition: Callable[[], object]) -> None:
    for _ in range(300):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not so within 3 s")


async def messages(box: Outbox, count: int) -> list[dict[str, object]]:
    got: list[dict[str, object]] = []
    async with asyncio.timeout(3.0):
        while len(got) < count:
            got += map(json.loads, await box.wait(1.0))
    return got


async def test_the_ack_then_the_current_bar_then_updates_while_the_recorder_is_slow() -> None:
    upstream, bars = FakeUpstream(), FakeBars({"005930": bar(1865)})
    hub: Hub[FakeLease] = Hub(upstream, None, bars, window_s=0.01)
    await hub.start()
    try:
        streaming = Outbox("a")
        hub.attach(streaming, "sa")
        await hub.subscribe(streaming, [TRADE_A])
        box = Outbox("b")
        hub.attach(box, "sb")
        bars.gate.clear()
        subscribing = asyncio.create_task(hub.subscribe(box, [CANDLE_A, TRADE_A], ACK))
        await asyncio.sleep(0.05)  # the current bar is being fetched
        await upstream.batches.put(trades(71))
        assert [m["type"] for m in await messages(streaming, 1)] == ["trade"]  # meanwhile
        assert not box.take()
        bars.gate.set()
        await subscribing
        await upstream.batches.put(trades(5))
        got = await messages(box, 3)
        assert [m["type"] for m in got] == ["subscribed", "candle", "trade"]
        assert got[1]["data"] == {**bar(1865).as_data(), "live": True}
        assert upstream.calls.count(("subscribe", TRADE_A.registration)) == 1  # held once
    finally:
        bars.gate.set()
        await hub.stop()


async def test_renewal_reports_lost_sessions_and_drops_lost_spares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "RENEW_EVERY_S", 0.02)
    pool = FakePool()
    hub = Hub(FakeUpstream(), pool, FakeBars({}), window_s=0.01)
    await hub.start()
    try:
        await until(lambda: len(hub.spare_leases) == SPARE_LEASES)
        lost_spare, kept_spare = (lease.session_id for lease in hub.spare_leases)
        reported: list[str] = []
        hub.watch("kept", lambda: reported.append("kept"))
        hub.watch("gone", lambda: reported.append("gone"))
        pool.lost = {"gone", lost_spare}
        await until(lambda: reported)
        assert set(reported) == {"gone"}
        assert [lease.session_id for lease in hub.spare_leases] == [kept_spare]
        assert {"kept", "gone", lost_spare} <= set(pool.renewed[-1])
        await hub.release_lease("gone", True, list(parse_channels(["trade:005930"])))
        assert pool.released[-1] == ("gone", True, parse_channels(["trade:005930"]), hub.replica_id)
        renewals = len(pool.renewed)
        await until(lambda: len(pool.renewed) > renewals)
        assert "gone" not in pool.renewed[-1]  # released: no longer renewed
    finally:
        await hub.stop()


async def test_a_pool_call_rides_out_a_restart_and_a_loss() -> None:
    pool = FakePool()
    hub = Hub(FakeUpstream(), pool, FakeBars({}))
    hub.spare_leases = [FakeLease("spare")]  # leased from the pool that is lost
    pool.failures = [PoolRestartingError("restarting"), PoolLostError("killed")]
    lease = await hub.take_lease("tab", "tab-session")
    assert lease == FakeLease("tab-session")
    assert pool.relocations == 1  # looked up again after the loss, not while restarting
    assert hub.spare_leases == []


async def test_a_pool_that_stays_lost_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "POOL_WAIT_S", 0.1)
    pool = FakePool()
    hub = Hub(FakeUpstream(), pool, FakeBars({}))
    pool.failures = [PoolRestartingError("restarting")] * 100
    with pytest.raises(PoolRestartingError):
        await hub.resume_lease("tab", "old-session")


@pytest.mark.parametrize(
    ("error", "relocates"),
    [
        (UnknownConsumerError("forgot"), False),
        (UpstreamRestartingError("restarting"), False),
        (UpstreamLostError("replaced"), True),
    ],
)
async def test_a_failed_pull_registers_again_and_resubscribes(
    error: Exception, relocates: bool
) -> None:
    upstream = FakeUpstream()
    hub = Hub(upstream, None, FakeBars({}), window_s=0.01)
    await hub.start()
    try:
        box = Outbox("a")
        hub.attach(box, "sa")
        await hub.subscribe(box, [TRADE_A])
        upstream.calls.clear()
        await upstream.batches.put(error)
        await upstream.batches.put(trades(7))
        assert [m["type"] for m in await messages(box, 1)] == ["trade"]
        again = [("register",), ("subscribe", TRADE_A.registration)]
        assert upstream.calls == ([("relocate",)] if relocates else []) + again
    finally:
        await hub.stop()


async def test_a_subscription_after_the_socket_actor_forgot_the_hub_still_succeeds() -> None:
    class Forgetful(FakeUpstream):
        async def subscribe(self, consumer_id: str, regs: list[Registration]) -> None:
            if ("relocate",) not in self.calls:
                raise UnknownConsumerError("who?")
            await super().subscribe(consumer_id, regs)

    upstream = Forgetful()
    hub = Hub(upstream, None, FakeBars({}), window_s=0.01)
    await hub.start()
    try:
        box = Outbox("a")
        hub.attach(box, "sa")
        await hub.subscribe(box, [TRADE_A], ACK)
        assert upstream.calls[-3:] == [
            ("relocate",),
            ("register",),
            ("subscribe", TRADE_A.registration),
        ]
        assert [m["type"] for m in await messages(box, 1)] == ["subscribed"]
    finally:
        await hub.stop()


def cum_volumes(got: list[dict[str, object]]) -> list[int]:
    return [t["cum_volume"] for m in got if m["type"] == "trade" for t in m["data"]]  # type: ignore[attr-defined, index]


async def resumed_hub() -> tuple[Hub[FakeLease], FakeUpstream, Outbox]:
    """A hub already streaming 005930 to another tab, as the replica a tab resumes on is."""
    upstream = FakeUpstream()
    hub: Hub[FakeLease] = Hub(upstream, None, FakeBars({}), window_s=0.01)
    await hub.start()
    other = Outbox("other")
    hub.attach(other, "s-other")
    await hub.subscribe(other, [TRADE_A])
    await upstream.batches.put(Batch("hub", 1, tuple(run(100, 10)), (), 0))  # cum 101 … 110
    assert cum_volumes(await messages(other, 1)) == list(range(101, 111))
    return hub, upstream, other


async def test_a_resumed_tab_gets_the_trades_it_missed_then_the_stream_without_repeats() -> None:
    hub, upstream, _ = await resumed_hub()
    try:
        box = Outbox("tab")
        hub.attach(box, "s-tab")
        await hub.subscribe(box, [TRADE_A], ACK, after={"005930": 104})
        await upstream.batches.put(Batch("hub", 2, tuple(run(110, 3)), (), 0))
        got = await messages(box, 3)
        assert [m["type"] for m in got] == ["subscribed", "trade", "trade"]
        assert got[1]["replayed"] is True
        assert cum_volumes(got) == list(range(105, 114))
    finally:
        await hub.stop()


async def test_a_resumed_tab_ahead_of_this_replica_waits_for_it_to_catch_up() -> None:
    hub, upstream, _ = await resumed_hub()
    try:
        box = Outbox("tab")
        hub.attach(box, "s-tab")
        # The dead replica had sent it up to 112: this one has only reached 110.
        await hub.subscribe(box, [TRADE_A], ACK, after={"005930": 112})
        await upstream.batches.put(Batch("hub", 2, tuple(run(110, 5)), (), 0))  # 111 … 115
        await upstream.batches.put(Batch("hub", 3, tuple(run(115, 1)), (), 0))
        got = await messages(box, 3)
        assert [m["type"] for m in got] == ["subscribed", "trade", "trade"]
        assert cum_volumes(got) == [113, 114, 115, 116]
    finally:
        await hub.stop()


async def test_a_gap_marker_when_the_missed_trades_are_not_here() -> None:
    hub, _upstream, _ = await resumed_hub()
    try:
        box = Outbox("tab")
        hub.attach(box, "s-tab")
        await hub.subscribe(box, [TRADE_A], ACK, after={"005930": 50})
        got = await messages(box, 3)
        assert [m["type"] for m in got] == ["subscribed", "gap", "trade"]
        assert got[1]["symbol"] == "005930" and got[1]["after_cum_volume"] == 50
        assert cum_volumes(got) == list(range(101, 111))  # what this replica has, after it
    finally:
        await hub.stop()


async def test_a_tab_that_never_catches_up_gets_a_gap_marker_and_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "CATCH_UP_WAIT_S", 0.05)
    hub, upstream, _ = await resumed_hub()
    try:
        box = Outbox("tab")
        hub.attach(box, "s-tab")
        await hub.subscribe(box, [TRADE_A], ACK, after={"005930": 999})  # e.g. another day
        await asyncio.sleep(0.1)
        await upstream.batches.put(Batch("hub", 2, tuple(run(110, 1)), (), 0))
        await upstream.batches.put(Batch("hub", 3, tuple(run(111, 1)), (), 0))
        got = await messages(box, 3)
        assert [m["type"] for m in got] == ["subscribed", "gap", "trade"]
        assert cum_volumes(got) == [112]  # 111 came before it gave up waiting: not repeated
        await hub.unsubscribe(box, [TRADE_A])
        assert ("unsubscribe", TRADE_A.registration) not in upstream.calls  # the other holds it
    finally:
        await hub.stop()


class NoRecorder(FakeBars):
    """No recorder in the cluster: each lookup takes a GCS round trip and fails."""

    def __init__(self) -> None:
        super().__init__({})
        self.lookups = 0

    async def locate(self) -> None:
        self.lookups += 1
        await asyncio.sleep(0.05)
        raise ValueError("no recorder")


async def test_a_storm_of_candle_subscriptions_looks_for_a_missing_recorder_once() -> None:
    bars = NoRecorder()
    hub = Hub(FakeUpstream(), None, bars, window_s=0.01)
    boxes = [Outbox(f"tab{n}") for n in range(20)]
    for n, box in enumerate(boxes):
        hub.attach(box, f"s{n}")
    await asyncio.gather(*(hub.subscribe(box, [CANDLE_A]) for box in boxes))
    await hub.subscribe(Outbox("late"), [CANDLE_A])  # within RECORDER_RECHECK_S of the lookup
    assert bars.lookups == 1
    assert hub.stats()["candle_source"] == "trades"


class ReplacedRecorder(FakeBars):
    """A recorder that is killed and replaced: the handle held fails until looked up again."""

    def __init__(self, bars: dict[str, MinuteBar]) -> None:
        super().__init__(bars)
        self.handle_dead = False
        self.replacement_dead = False  # True: the new one fails too
        self.lookups = 0

    async def locate(self) -> None:
        self.lookups += 1
        self.handle_dead = self.replacement_dead

    async def forming_bars(self) -> dict[str, MinuteBar]:
        if self.handle_dead:
            raise RuntimeError("the actor died")
        return await super().forming_bars()


async def candles_on_subscribe(hub: Hub[FakeLease], name: str) -> list[dict[str, object]]:
    box = Outbox(name)
    hub.attach(box, name)
    await hub.subscribe(box, [CANDLE_A], ACK)
    await hub.unsubscribe(box, [CANDLE_A])  # no candle channel wanted: the long-poll idles
    return [m for m in map(json.loads, box.take()) if m["type"] == "candle"]


@pytest.mark.parametrize("replacement_works", [True, False])
async def test_a_new_candle_tab_never_gets_a_replaced_recorders_bar(
    replacement_works: bool,
) -> None:
    bars = ReplacedRecorder({"005930": bar(2151)})
    hub: Hub[FakeLease] = Hub(FakeUpstream(), None, bars, window_s=0.01)
    await hub.start()
    try:
        (first,) = await candles_on_subscribe(hub, "early")
        assert first["data"]["volume"] == 2151
        bars.handle_dead, bars.replacement_dead = True, not replacement_works
        # The new recorder started within the minute: its bar has seen fewer trades, yet it is
        # the one /candles now agrees with.
        bars.bars = {"005930": dataclasses.replace(bar(318), open=95)}
        got = await candles_on_subscribe(hub, "late")
        assert bars.lookups == 2  # looked up again at the failure, not later
        if replacement_works:
            assert [(m["data"]["open"], m["data"]["volume"]) for m in got] == [(95, 318)]
        else:
            assert got == []  # nothing rather than the old recorder's bar
    finally:
        await hub.stop()


def test_the_window_follows_the_frame_budget_and_a_slow_render_widens_it_less() -> None:
    hub = Hub(FakeUpstream(), None, FakeBars({}), window_s=0.01, frame_budget=4000)
    tabs = [Outbox(f"tab-{i}") for i in range(1000)]
    for tab in tabs[:10]:
        hub.index.add(tab)
    hub._last_cost = 1.0  # every window renders slowly: a descheduled process
    for _ in range(20):
        hub._adapt()
    assert hub.window_s == pytest.approx(0.1)  # not the 250 ms that 1,000 sockets need
    for tab in tabs[10:]:
        hub.index.add(tab)
    hub._last_cost = 0.0
    hub._adapt()
    assert hub.window_s == pytest.approx(0.25)  # 1,000 sockets ÷ 4,000 frames/s
    for tab in tabs[10:]:
        hub.index.remove(tab)
    for _ in range(20):
        hub._adapt()
    assert hub.window_s == pytest.approx(0.01)  # cheap again: back to the floor
