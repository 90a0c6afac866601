"""The one KIS socket (engine.kis.connection / engine.kis.feed) against the real simulator."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from engine.errors import SubscriptionLimitError, UnknownConsumerError
from engine.kis import BOOK, TRADE, BookSnapshot, Trade
from engine.kis.connection import Backoff, ConnectionConfig, ConnectionState
from engine.kis.feed import KisFeed
from engine.kis.registry import Registration
from engine.logs import redact

FAST = {
    "backoff_base_s": 0.02,
    "backoff_max_s": 0.2,
    "stable_after_s": 0.0,
    "silence_timeout_s": 5.0,
    "ack_timeout_s": 5.0,
    "in_use_backoff_s": 0.5,
}


def book(symbol: str) -> Registration:
    return Registration(BOOK, symbol)


async def sim_stats(sim) -> dict:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=sim.rest_url) as client:
        return (await client.get("/_sim/stats")).json()


async def sim_fault(sim, **body: object) -> dict:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=sim.rest_url) as client:
        reply = await client.post("/_sim/fault", json=body)
        reply.raise_for_status()
        return reply.json()


def upstream_keys(stats: dict) -> set[tuple[str, str]]:
    return {(r["tr_id"], r["tr_key"]) for r in stats["registrations"]}


async def until(predicate: Callable[[], object], within_s: float = 5.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {within_s} s: {what or predicate}")


@asynccontextmanager
async def running_feed(sim, lease_s: float = 30.0, **overrides: object) -> AsyncIterator[KisFeed]:  # type: ignore[no-untyped-def]
    options = {**FAST, **overrides}
    config = ConnectionConfig(sim.ws_url, sim.rest_url, "app-key", "secret", **options)  # type: ignore[arg-type]
    feed = KisFeed(config, lease_s=lease_s)
    feed.start()
    try:
        yield feed
    finally:
        await feed.stop()


async def symbols_seen(feed: KisFeed, consumer_id: str, rounds: int = 40) -> set[str]:
    """Pull a few batches and return the symbols the consumer received."""
    seen: set[str] = set()
    for _ in range(rounds):
        batch = await feed.next_batch(consumer_id, 0.2)
        if batch is not None:
            seen |= {r.symbol for r in batch.records}
    return seen


async def test_three_consumers_share_one_socket_with_the_union_of_registrations(
    sim_factory,
) -> None:
    async with sim_factory(speed=60) as sim, running_feed(sim) as feed:
        wants = {
            "a": [book("005930"), book("000660")],
            "b": [book("000660"), book("035420")],
            "c": [book("051910")],
        }
        for consumer_id, regs in wants.items():
            feed.register(consumer_id)
            await feed.subscribe(consumer_id, regs)
        async with asyncio.timeout(5):
            await feed.connection.wait_connected()
        stats = await sim_stats(sim)
        assert stats["connections_open"] == 1
        assert stats["max_concurrent_connections"] == 1
        union = {(r.tr_id, r.tr_key) for regs in wants.values() for r in regs}
        assert upstream_keys(stats) == union
        assert len(stats["registrations"]) == 4  # 000660 shared, registered once
        for consumer_id, regs in wants.items():
            assert await symbols_seen(feed, consumer_id) == {r.tr_key for r in regs}


async def test_a_hundred_drops_reconnect_one_socket_at_a_time_and_restore_everything(
    sim_factory,
) -> None:
    async with sim_factory(speed=60) as sim, running_feed(sim) as feed:
        regs = [book("005930"), Registration(TRADE, "005930"), book("000660")]
        feed.register("a")
        await feed.subscribe("a", regs)
        async with asyncio.timeout(5):
            await feed.connection.wait_connected()
        conn = feed.connection
        assert feed.take("a").statuses == ("connected",)  # type: ignore[union-attr]
        statuses: list[str] = []
        for i in range(100):
            connects = conn.connects
            assert (await sim_fault(sim, kind="drop"))["affected"] == 1, f"drop {i}"
            await until(
                lambda c=connects: conn.connects > c and conn.state is ConnectionState.CONNECTED,
                what=f"reconnect {i}",
            )
            batch = feed.take("a")
            if batch is not None:
                statuses.extend(batch.statuses)
        stats = await sim_stats(sim)
        assert conn.reconnects == 100
        assert stats["connections_total"] == 101
        assert stats["max_concurrent_connections"] == 1  # never two sockets for the app key
        assert stats["connections_open"] == 1
        assert upstream_keys(stats) == {(r.tr_id, r.tr_key) for r in regs}, (stats, conn.stats())
        assert conn.stats().live_registrations == 3
        assert statuses == ["reconnecting", "connected"] * 100
        feed.take("a")
        assert await symbols_seen(feed, "a", rounds=10) == {"005930", "000660"}


async def test_pingpong_is_echoed_so_the_server_keeps_the_socket(sim_factory) -> None:
    async with sim_factory(ping_interval_s=0.1) as sim, running_feed(sim) as feed:
        feed.register("a")
        await feed.subscribe("a", [book("005930")])
        await until(lambda: feed.connection.pings >= 5)
        stats = await sim_stats(sim)
        assert stats["dropped_no_echo"] == 0
        assert stats["echoes_received"] >= 4
        assert stats["connections_total"] == 1


async def test_the_watchdog_reconnects_after_silence(sim_factory) -> None:
    async with sim_factory(speed=60) as sim, running_feed(sim, silence_timeout_s=0.3) as feed:
        feed.register("a")
        await feed.subscribe("a", [book("005930")])
        async with asyncio.timeout(5):
            await feed.connection.wait_connected()
        await sim_fault(sim, kind="stall", seconds=3)
        await until(lambda: feed.connection.watchdog_timeouts >= 1)
        await until(lambda: feed.connection.reconnects >= 1 and feed.connection.connected)
        stats = await sim_stats(sim)
        assert stats["max_concurrent_connections"] == 1
        assert upstream_keys(stats) == {(BOOK, "005930")}


async def test_an_unknown_approval_key_is_reissued_once(sim_factory) -> None:
    async with sim_factory() as sim:
        config = ConnectionConfig(sim.ws_url, sim.rest_url, "app-key", "secret", **FAST)  # type: ignore[arg-type]
        feed = KisFeed(config)
        feed.connection._approvals._key = "not-a-key-the-server-issued"  # a stale cached key
        feed.connection._approvals._issued_at = asyncio.get_running_loop().time()
        feed.register("a")
        await feed.subscribe("a", [book("005930")])
        feed.start()
        try:
            async with asyncio.timeout(5):
                await feed.connection.wait_connected()
            assert feed.connection.stats().approval_keys_issued == 1
            assert (await sim_stats(sim))["approvals_issued"] == 1
        finally:
            await feed.stop()


async def test_app_key_in_use_is_not_hammered(sim_factory, caplog) -> None:
    async with sim_factory() as sim:
        await sim_fault(sim, kind="reject_next", mode="in_use")
        async with running_feed(sim, in_use_backoff_s=1.0) as feed:
            feed.register("a")
            await feed.subscribe("a", [book("005930")])
            await until(lambda: feed.connection.in_use_rejections == 1)
            await asyncio.sleep(0.6)  # well past the normal backoff (≤ 0.2 s)
            stats = await sim_stats(sim)
            assert stats["connections_total"] == 1  # no retry yet
            assert feed.connection.state is ConnectionState.RECONNECTING
            async with asyncio.timeout(5):
                await feed.connection.wait_connected()
            assert feed.connection.stats().approval_keys_issued == 1  # never reissued for 8996
        assert any(
            "ALREADY IN USE" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records
        )


async def test_handshake_failures_back_off_and_recover(sim_factory) -> None:
    async with sim_factory() as sim:
        await sim_fault(sim, kind="reject_next", count=3, mode="http")
        async with running_feed(sim) as feed:
            async with asyncio.timeout(5):
                await feed.connection.wait_connected()
            assert feed.connection.connect_failures == 3
            assert feed.connection.reconnects == 0  # a first connection, reached late


async def test_a_malformed_frame_is_counted_and_the_stream_goes_on(sim_factory) -> None:
    async with sim_factory(speed=60) as sim, running_feed(sim) as feed:
        feed.register("a")
        await feed.subscribe("a", [book("005930")])
        async with asyncio.timeout(5):
            await feed.connection.wait_connected()
        await sim_fault(sim, kind="malformed")
        await until(lambda: feed.connection.decode_errors == 1)
        feed.take("a")
        assert await symbols_seen(feed, "a", rounds=5) == {"005930"}
        assert feed.connection.connects == 1


async def test_the_registration_past_the_cap_is_refused_to_that_consumer_only(
    sim_factory,
) -> None:
    async with sim_factory(speed=60) as sim, running_feed(sim) as feed:
        for i in range(41):
            feed.register(f"c{i}")
            await feed.subscribe(f"c{i}", [book(f"{100000 + i:06d}")])
        async with asyncio.timeout(5):
            await feed.connection.wait_connected()
        feed.register("late")
        with pytest.raises(SubscriptionLimitError):
            await feed.subscribe("late", [book("999999")])
        stats = await sim_stats(sim)
        assert len(stats["registrations"]) == 41
        assert (BOOK, "999999") not in upstream_keys(stats)
        assert feed.connection.stats().refused == {}
        for i in (0, 20, 40):
            assert await symbols_seen(feed, f"c{i}", rounds=5) == {f"{100000 + i:06d}"}


async def test_a_silent_consumer_is_released_after_its_lease(sim_factory) -> None:
    async with sim_factory(speed=60) as sim, running_feed(sim, lease_s=0.5) as feed:
        feed.register("gone")
        feed.register("stays")
        await feed.subscribe("gone", [book("005930"), book("000660")])
        await feed.subscribe("stays", [book("000660")])
        async with asyncio.timeout(5):
            await feed.connection.wait_connected()
        loop = asyncio.get_running_loop()
        started = loop.time()
        while feed.is_registered("gone"):
            feed.touch("stays")
            await asyncio.sleep(0.05)
            # Generous slack: the release is what matters; a busy 2-core machine delays it.
            assert loop.time() - started < 0.5 + feed.sweep_interval_s + 2.0
        await until(lambda: feed.connection.stats().live_registrations == 1)
        assert upstream_keys(await sim_stats(sim)) == {(BOOK, "000660")}
        with pytest.raises(UnknownConsumerError):
            feed.touch("gone")
        assert feed.stats().consumers_expired == 1


async def test_unsubscribing_the_last_holder_unsubscribes_upstream(sim_factory) -> None:
    async with sim_factory() as sim, running_feed(sim) as feed:
        for cid in ("a", "b"):
            feed.register(cid)
            await feed.subscribe(cid, [book("005930")])
        async with asyncio.timeout(5):
            await feed.connection.wait_connected()
        await feed.unsubscribe("a", [book("005930")])
        assert upstream_keys(await sim_stats(sim)) == {(BOOK, "005930")}
        await feed.unregister("b")
        await until(lambda: feed.connection.stats().live_registrations == 0)
        assert upstream_keys(await sim_stats(sim)) == set()


async def test_records_are_typed_and_the_approval_key_never_reaches_a_log(sim_factory) -> None:
    async with sim_factory(speed=60) as sim, running_feed(sim) as feed:
        feed.register("a")
        await feed.subscribe("a", [book("005930"), Registration(TRADE, "005930")])
        kinds: set[type] = set()
        for _ in range(50):
            batch = await feed.next_batch("a", 0.2)
            if batch is not None:
                kinds |= {type(r) for r in batch.records}
            if kinds == {Trade, BookSnapshot}:
                break
        assert kinds == {Trade, BookSnapshot}
        key = feed.connection._approvals._key
        assert key is not None and redact(f"key={key}") == "key=[REDACTED]"


async def test_a_pull_waits_out_the_interval_since_the_consumers_last_batch(sim_factory) -> None:
    """A hub keeps its next pull outstanding at once; the feed still hands it one batch per
    window, and a pull after a quiet spell is not held back."""
    async with sim_factory(speed=60) as sim, running_feed(sim) as feed:
        feed.register("a")
        await feed.subscribe("a", [book("005930"), Registration(TRADE, "005930")])
        assert await feed.next_batch("a", 5.0) is not None
        gaps = []
        for _ in range(4):
            before = time.monotonic()
            batch = await feed.next_batch("a", 5.0, None, 0.25)
            gaps.append(time.monotonic() - before)
            assert batch is not None
        assert min(gaps) >= 0.24, gaps
        await asyncio.sleep(0.3)
        before = time.monotonic()
        await feed.next_batch("a", 5.0, None, 0.25)
        assert time.monotonic() - before < 0.2


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, 0.2, random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    nominal = [min(30.0, 0.5 * 2**i) for i in range(10)]
    for delay, base in zip(delays, nominal, strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    backoff.reset()
    assert backoff.next_delay() <= 0.6


async def test_a_pingpong_with_a_body_is_echoed_and_never_registers(sim_factory) -> None:
    # The heartbeat shape captured in mgh3326/go-kis internal/testutil/fixtures/ws-pingpong.json.
    ping = (
        '{"header":{"tr_id":"PINGPONG"},"body":{"rt_cd":"0","msg_cd":"MCA00000",'
        '"msg1":"PING","output":{}}}'
    )
    async with sim_factory(speed=60) as sim, running_feed(sim) as feed:
        feed.register("a")
        await feed.subscribe("a", [book("005930")])
        async with asyncio.timeout(5):
            await feed.connection.wait_connected()
        await until(lambda: feed.connection.stats().live_registrations == 1)
        before = (await sim_stats(sim))["echoes_received"]
        pings = feed.connection.pings
        await sim_fault(sim, kind="malformed", frame=ping)
        await until(lambda: feed.connection.pings == pings + 1)
        stats = await sim_stats(sim)
        assert stats["echoes_received"] >= before + 1
        assert feed.connection.stats().live_registrations == 1
        assert feed.connection.decode_errors == 0


async def test_a_bad_record_is_counted_and_its_neighbours_delivered(sim_factory, caplog) -> None:
    fields = ["0"] * 47
    fields[:3] = ["005930", "093001", "71000"]
    fields[33] = "20250312"
    good, bad = "^".join(fields), "^".join(["005930", "093001", "7l000", *fields[3:]])
    frame = f"0|H0STCNT0|003|{good}^{bad}^{good}"
    async with sim_factory(speed=1) as sim, running_feed(sim) as feed:
        feed.register("a")
        await feed.subscribe("a", [Registration(TRADE, "005930")])
        async with asyncio.timeout(5):
            await feed.connection.wait_connected()
        await until(lambda: feed.connection.stats().live_registrations == 1)
        await sim_fault(sim, kind="pause_symbol", symbol="005930", seconds=30)
        feed.take("a")
        with caplog.at_level("DEBUG", logger="engine.kis.connection"):
            await sim_fault(sim, kind="malformed", frame=frame)
            await until(lambda: feed.connection.decode_errors == 1)
        prices = []
        for _ in range(10):
            batch = await feed.next_batch("a", 0.1)
            if batch is not None:
                prices += [r.price for r in batch.records if r.time == "093001"]
        assert prices == [71000, 71000]
        assert any(bad in r.getMessage() for r in caplog.records)
