"""KisSocketActor on a real Ray cluster against the real simulator (issue #5's done-when list)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import ray

from actors.kis_socket import get_or_create_kis_socket
from actors.names import KIS_SOCKET, NAMESPACE
from engine.errors import SubscriptionLimitError, UnknownConsumerError
from engine.kis import BOOK

FAST = {
    "kis_backoff_base_s": 0.02,
    "kis_backoff_max_s": 0.3,
    "kis_consumer_lease_s": 20.0,  # consumer actors can take seconds to start on a busy box
}


def wait_for(predicate: Callable[[], object], within_s: float = 30.0, what: str = "") -> float:
    """Poll until true; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not within {within_s} s: {what}")


def kill_socket_actor() -> None:
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(KIS_SOCKET, namespace=NAMESPACE), no_restart=True)

    def gone() -> bool:
        try:
            ray.get_actor(KIS_SOCKET, namespace=NAMESPACE)
        except ValueError:
            return True
        return False

    wait_for(gone, 30, "the kis-socket name to be free")


@pytest.fixture
def socket_factory(ray_cluster: None) -> Iterator[Callable[..., object]]:
    """Create the `kis-socket` actor against a simulator; it is killed after the test."""
    kill_socket_actor()  # nothing left over from another test

    def create(sim, **overrides: object):  # type: ignore[no-untyped-def]
        actor = get_or_create_kis_socket(
            kis_ws_url=sim.ws_url, kis_rest_url=sim.rest_url, **{**FAST, **overrides}
        )
        assert ray.get(actor.wait_connected.remote(20))
        return actor

    yield create
    kill_socket_actor()


# The workers cannot import the tests package: ship this module's classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0)
class PushConsumer:
    """A consumer as issue #6/#7 build them: push delivery, heartbeat, re-register on restart."""

    async def __init__(self, consumer_id: str, regs: list[tuple[str, str]]) -> None:
        self.consumer_id, self.regs = consumer_id, regs
        self.symbols: Counter[str] = Counter()
        self.statuses: list[str] = []
        self.registrations = 0
        self.socket = ray.get_actor(KIS_SOCKET, namespace=NAMESPACE)
        await self._register()
        self._task = asyncio.create_task(self._heartbeat())

    async def _register(self) -> None:
        me = ray.get_runtime_context().current_actor
        await self.socket.register.remote(self.consumer_id, push_to=me)
        await self.socket.subscribe.remote(self.consumer_id, self.regs)
        self.registrations += 1

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            try:
                await self.socket.heartbeat.remote(self.consumer_id)
            except UnknownConsumerError:
                with contextlib.suppress(Exception):
                    await self._register()  # the socket restarted or forgot us
            except Exception:  # the socket is restarting: try again next beat
                pass

    async def push(self, batch) -> None:  # type: ignore[no-untyped-def]
        self.symbols.update(r.symbol for r in batch.records)
        self.statuses.extend(batch.statuses)

    def seen(self) -> dict[str, int]:
        return dict(self.symbols)

    def info(self) -> dict[str, object]:
        return {"statuses": list(self.statuses), "registrations": self.registrations}


def book(symbol: str) -> tuple[str, str]:
    return (BOOK, symbol)


def pull_symbols(actor, consumer_id: str, rounds: int = 20, wait_s: float = 0.2) -> set[str]:  # type: ignore[no-untyped-def]
    seen: set[str] = set()
    for _ in range(rounds):
        batch = ray.get(actor.next_batch.remote(consumer_id, wait_s))
        if batch is not None:
            seen |= {r.symbol for r in batch.records}
    return seen


def first_symbols(actor, consumer_id: str, within_s: float) -> set[str]:  # type: ignore[no-untyped-def]
    """The symbols of the first non-empty batch (a quiet symbol may take a few seconds)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        batch = ray.get(actor.next_batch.remote(consumer_id, 1.0))
        if batch is not None and batch.records:
            return {r.symbol for r in batch.records}
    return set()


def grows(consumer, symbols: set[str]) -> Callable[[], bool]:  # type: ignore[no-untyped-def]
    """A predicate: every symbol's count went up since now."""
    before = ray.get(consumer.seen.remote())

    def check() -> bool:
        now = ray.get(consumer.seen.remote())
        return all(now.get(s, 0) > before.get(s, 0) for s in symbols)

    return check


def test_every_caller_gets_the_one_detached_actor(socket_factory, threaded_sim_factory) -> None:
    with threaded_sim_factory() as sim:
        first = socket_factory(sim)
        second = get_or_create_kis_socket(kis_ws_url="ws://127.0.0.1:1")  # ignored: it exists
        assert first._actor_id == second._actor_id
        stats = ray.get(second.stats.remote())
        assert stats["ws_url"] == sim.ws_url and stats["state"] == "connected"
        named = ray.util.list_named_actors(all_namespaces=True)
        assert {"name": KIS_SOCKET, "namespace": NAMESPACE} in named
        info = ray._private.state.actors(first._actor_id.hex())
        assert info["IsDetached"] is True


def test_three_consumers_one_connection_union_of_registrations(
    socket_factory, threaded_sim_factory
) -> None:
    with threaded_sim_factory() as sim:
        sock = socket_factory(sim)
        a = PushConsumer.remote("a", [book("005930"), book("000660")])
        b = PushConsumer.remote("b", [book("000660"), book("035420")])
        ray.get(sock.register.remote("c"))  # a pull consumer
        ray.get(sock.subscribe.remote("c", [book("051910")]))
        union = {book(s) for s in ("005930", "000660", "035420", "051910")}
        wait_for(lambda: sim.registrations() == union, what="the union upstream")
        stats = sim.stats()
        assert stats["connections_open"] == 1 and stats["max_concurrent_connections"] == 1
        assert len(stats["registrations"]) == 4
        wait_for(lambda: set(ray.get(a.seen.remote())) == {"005930", "000660"}, what="a's data")
        wait_for(lambda: set(ray.get(b.seen.remote())) == {"000660", "035420"}, what="b's data")
        assert pull_symbols(sock, "c") == {"051910"}
        time.sleep(0.3)
        assert set(ray.get(a.seen.remote())) == {"005930", "000660"}  # nothing foreign
        assert ray.get(sock.stats.remote())["registrations"] == 4
        for consumer in (a, b):
            ray.kill(consumer)


@pytest.mark.slow
def test_a_hundred_forced_drops(socket_factory, threaded_sim_factory) -> None:
    with threaded_sim_factory() as sim:
        sock = socket_factory(sim)
        a = PushConsumer.remote("a", [book("005930"), book("000660")])
        b = PushConsumer.remote("b", [book("035420")])
        wanted = {book("005930"), book("000660"), book("035420")}
        wait_for(lambda: sim.registrations() == wanted, what="registrations")
        for i in range(100):
            connects = ray.get(sock.stats.remote())["connects"]
            assert sim.fault(kind="drop")["affected"] == 1, f"drop {i}"

            def back(c: int = connects) -> bool:
                s = ray.get(sock.stats.remote())
                return s["connects"] > c and s["state"] == "connected"

            wait_for(back, what=f"reconnect after drop {i}")
        stats, kis = sim.stats(), ray.get(sock.stats.remote())
        assert kis["reconnects"] == 100
        assert stats["connections_total"] == 101
        assert stats["max_concurrent_connections"] == 1  # never two open sockets
        assert sim.registrations() == wanted
        wait_for(grows(a, {"005930", "000660"}), what="a streaming again")
        wait_for(grows(b, {"035420"}), what="b streaming again")
        assert "reconnecting" in ray.get(a.info.remote())["statuses"]
        for consumer in (a, b):
            ray.kill(consumer)


@pytest.mark.slow
def test_sigkill_restarts_and_restores_live_consumers_within_5s(
    socket_factory, threaded_sim_factory
) -> None:
    with threaded_sim_factory() as sim:
        sock = socket_factory(sim)
        a = PushConsumer.remote("a", [book("005930")])
        b = PushConsumer.remote("b", [book("000660")])
        wanted = {book("005930"), book("000660")}
        wait_for(lambda: sim.registrations() == wanted, what="registrations")
        before = ray.get(sock.stats.remote())["incarnation"]
        os.kill(ray.get(sock.pid.remote()), signal.SIGKILL)
        killed = time.monotonic()

        def restored() -> bool:
            try:
                kis = ray.get(sock.stats.remote(), timeout=2)
            except (ray.exceptions.RayError, TimeoutError):
                return False
            return (
                kis["incarnation"] != before
                and kis["state"] == "connected"
                and sim.registrations() == wanted
            )

        wait_for(restored, within_s=10, what="restart and resubscription")
        wait_for(grows(a, {"005930"}), within_s=5, what="a streaming")
        wait_for(grows(b, {"000660"}), within_s=5, what="b streaming")
        elapsed = time.monotonic() - killed
        assert elapsed < 5.0, f"restored after {elapsed:.1f} s"
        stats = sim.stats()
        assert stats["max_concurrent_connections"] == 1
        assert stats["connections_open"] == 1
        assert ray.get(a.info.remote())["registrations"] == 2  # it re-registered once
        for consumer in (a, b):
            ray.kill(consumer)


def test_the_42nd_registration_is_refused_to_that_consumer_only(
    socket_factory, threaded_sim_factory
) -> None:
    with threaded_sim_factory() as sim:
        sock = socket_factory(sim, kis_consumer_lease_s=60)  # 41 pull consumers, polled in turn
        ids = [f"c{i}" for i in range(41)]
        for i, cid in enumerate(ids):
            ray.get(sock.register.remote(cid))
            ray.get(sock.subscribe.remote(cid, [book(f"{200000 + i:06d}")]))
        ray.get(sock.register.remote("late"))
        with pytest.raises(SubscriptionLimitError) as err:
            ray.get(sock.subscribe.remote("late", [book("999999")]))
        assert err.value.code == "SUBSCRIPTION_LIMIT"
        wait_for(lambda: len(sim.registrations()) == 41, what="41 upstream")
        assert book("999999") not in sim.registrations()
        kis = ray.get(sock.stats.remote())
        assert kis["registrations"] == 41 and kis["refused"] == {}
        assert ray.get(sock.subscribe.remote("late", [])) == frozenset()
        for i, cid in enumerate(ids):  # each still streams: the socket took nothing from them
            assert first_symbols(sock, cid, within_s=15.0) == {f"{200000 + i:06d}"}


def test_vanished_consumers_are_released_within_the_lease(
    socket_factory, threaded_sim_factory
) -> None:
    lease_s = 1.5
    with threaded_sim_factory() as sim:
        sock = socket_factory(sim, kis_consumer_lease_s=lease_s)
        pusher = PushConsumer.remote("pusher", [book("005930")])
        wait_for(lambda: book("005930") in sim.registrations(), what="the pusher's registration")
        for consumer_id, symbol in (("puller", "000660"), ("keeper", "035420")):
            ray.get(sock.register.remote(consumer_id))
            ray.get(sock.subscribe.remote(consumer_id, [book(symbol)]))

        def three() -> bool:
            for consumer_id in ("puller", "keeper"):  # alive so far
                ray.get(sock.heartbeat.remote(consumer_id))
            return len(sim.registrations()) == 3

        wait_for(three, what="three registrations")
        ray.kill(pusher)  # dies without unsubscribing
        started = time.monotonic()  # the puller stops calling from here on

        def only_keeper() -> bool:
            ray.get(sock.heartbeat.remote("keeper"))
            return sim.registrations() == {book("035420")}

        took = wait_for(only_keeper, within_s=lease_s + 2, what="release of the vanished")
        assert took <= lease_s + 1.0 + 0.5  # lease + one sweep period + slack
        assert time.monotonic() - started < lease_s + 2
        with pytest.raises(UnknownConsumerError):
            ray.get(sock.heartbeat.remote("puller"))
        assert ray.get(sock.stats.remote())["consumers"] == 1
