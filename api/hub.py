"""The replica's hub (engine.live.hub) wired to Ray: adapters for its three ports over actor
handles, and `replica_hub()`, which builds this process's one hub.

The adapters live here, not in actors/: they run in the Serve replica and call actors, while
actors/ holds the actors themselves. Each sends `.remote()` calls to the handle it holds, looks
its actor up again by name (actors/names.py) when the hub asks, and turns Ray's errors into the
ones the hub reacts to (engine.live.ports): a dead or restarting actor, or a task's own
KisrayError, unwrapped from Ray's RayTaskError.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from actors.names import find_candles, find_kis_socket, find_recorder
from actors.session import Lease, Release, SessionSlot, session_pool
from api.ingress import serves_directly
from engine.config import get_settings
from engine.domain.bars import LiveBar, MinuteBar
from engine.errors import KisrayError
from engine.kis.delivery import Batch
from engine.kis.registry import Registration
from engine.live.batching import KeyedBatcher
from engine.live.channels import Channel
from engine.live.gc_pauses import settle_heap
from engine.live.hub import Hub
from engine.live.ports import (
    LeaseRequest,
    PoolLostError,
    PoolRestartingError,
    UpstreamLostError,
    UpstreamRestartingError,
)

PROXY_FRAME_BUDGET = 1000.0  # frames per second when clients come through Serve's proxy

ReplicaHub: TypeAlias = Hub[Lease]


@contextmanager
def _translated(lost: type[Exception], restarting: type[Exception]) -> Iterator[None]:
    try:
        yield
    except ActorUnavailableError as exc:
        raise restarting(str(exc)) from exc
    except RayActorError as exc:
        raise lost(str(exc)) from exc
    except RayTaskError as exc:
        if isinstance(exc.cause, KisrayError):
            raise exc.cause from exc
        raise


class _Pull:
    """A pull already sent (its ObjectRef): awaiting it gets the batch, errors translated."""

    def __init__(self, ref: Any) -> None:
        self._ref = ref

    def __await__(self) -> Generator[Any, None, Batch | None]:
        with _translated(UpstreamLostError, UpstreamRestartingError):
            return (yield from self._ref.__await__())


class RayUpstream:
    """The `kis-socket` actor as the hub's Upstream."""

    def __init__(self, resolve: Callable[[], Any] = find_kis_socket) -> None:
        self._resolve = resolve
        self._actor = resolve()  # raises (ValueError) while the cluster has none

    async def register(self, consumer_id: str) -> None:
        with _translated(UpstreamLostError, UpstreamRestartingError):
            await self._actor.register.remote(consumer_id)

    async def unregister(self, consumer_id: str) -> None:
        with _translated(UpstreamLostError, UpstreamRestartingError):
            await self._actor.unregister.remote(consumer_id)

    async def subscribe(self, consumer_id: str, regs: list[Registration]) -> None:
        with _translated(UpstreamLostError, UpstreamRestartingError):
            await self._actor.subscribe.remote(consumer_id, regs)

    async def unsubscribe(self, consumer_id: str, regs: list[Registration]) -> None:
        with _translated(UpstreamLostError, UpstreamRestartingError):
            await self._actor.unsubscribe.remote(consumer_id, regs)

    def pull(self, consumer_id: str, wait_s: float, min_interval_s: float) -> _Pull:
        return _Pull(self._actor.next_batch.remote(consumer_id, wait_s, None, min_interval_s))

    async def relocate(self) -> None:
        self._actor = await asyncio.to_thread(self._resolve)


class RaySessionPool:
    """The `session-pool` actor as the hub's SessionPool."""

    def __init__(self, actor: Any, resolve: Callable[[], Any]) -> None:
        self._actor = actor
        self._resolve = resolve
        # New tabs' leases share a call; a resume goes alone (actors.session.acquire_many).
        self._leases: KeyedBatcher[None, LeaseRequest, Lease] = KeyedBatcher(self._acquire_many)
        # Closed sockets' releases share calls too: a thousand tabs may leave at once.
        self._releases: KeyedBatcher[None, Release, None] = KeyedBatcher(self._release_many)

    async def acquire(self, request: LeaseRequest) -> Lease:
        if request.resume is None:
            return await self._leases.submit(None, request)
        with _translated(PoolLostError, PoolRestartingError):
            return await self._actor.acquire.remote(request)

    async def _acquire_many(self, _: None, requests: list[LeaseRequest]) -> list[Any]:
        with _translated(PoolLostError, PoolRestartingError):
            return await self._actor.acquire_many.remote(requests)

    async def adopt(self, session_id: str, replica_id: str, channels: list[Channel]) -> Lease:
        with _translated(PoolLostError, PoolRestartingError):
            return await self._actor.adopt.remote(session_id, replica_id, channels)

    async def release(
        self, session_id: str, park: bool, channels: tuple[Channel, ...] | None, replica_id: str
    ) -> None:
        await self._releases.submit(None, (session_id, park, channels, replica_id))

    async def _release_many(self, _: None, releases: list[Release]) -> list[Any]:
        with _translated(PoolLostError, PoolRestartingError):
            return await self._actor.release_many.remote(releases)

    async def renew(self, replica_id: str, session_ids: list[str]) -> list[str]:
        with _translated(PoolLostError, PoolRestartingError):
            return await self._actor.renew.remote(replica_id, session_ids)

    async def relocate(self) -> None:
        self._actor = await asyncio.to_thread(self._resolve)


class RayBarSource:
    """The `recorder` and `candles` actors as the hub's BarSource. The candle service is looked
    up at each roll-up, as it may be replaced at any time."""

    def __init__(
        self,
        resolve_recorder: Callable[[], Any] = find_recorder,
        resolve_candles: Callable[[], Any] = find_candles,
    ) -> None:
        self._resolve_recorder = resolve_recorder
        self._resolve_candles = resolve_candles
        self._recorder: Any = None  # set by locate(); the hub asks for bars only after it

    async def locate(self) -> None:
        self._recorder = await asyncio.to_thread(self._resolve_recorder)

    async def forming_bars(self) -> dict[str, MinuteBar]:
        return await self._recorder.forming_bars.remote()

    async def forming_updates(self, after: int, wait_s: float) -> tuple[int, dict[str, MinuteBar]]:
        return await self._recorder.forming_updates.remote(after, wait_s)

    async def live_bars(
        self, symbol: str, intervals: list[str], bar: MinuteBar | None
    ) -> dict[str, LiveBar]:
        candles = await asyncio.to_thread(self._resolve_candles)
        return await candles.live_bars.remote(symbol, intervals, bar)


class SessionOps:
    """The replica's ops on its sockets' session actors, sent as one `apply` call per actor
    at a time (engine.live.batching); one socket's ops keep their order. A call that fails
    fails each op in it: a dead actor raises RayActorError to every socket it hosted."""

    def __init__(self) -> None:
        self._batcher: KeyedBatcher[str, tuple[SessionSlot, str, list[Channel]], object] = (
            KeyedBatcher(self._apply)
        )

    async def apply(self, slot: SessionSlot, op: str, channels: list[Channel]) -> object:
        return await self._batcher.submit(slot.host, (slot, op, channels))

    @staticmethod
    async def _apply(_: str, ops: list[tuple[SessionSlot, str, list[Channel]]]) -> list[Any]:
        actor = ops[0][0].actor  # one host is one actor
        return await actor.apply.remote([(slot.slot, op, channels) for slot, op, channels in ops])


@functools.cache
def session_ops() -> SessionOps:
    """This process's SessionOps."""
    return SessionOps()


_hub: ReplicaHub | None = None
_hub_lock = asyncio.Lock()


def replica_session_pool() -> Any:
    """The cluster's session pool, created on first use (or again, after it was killed)."""
    settings = get_settings()
    return session_pool(settings.ws_session_pool, settings.sessions_per_actor)


async def replica_hub() -> ReplicaHub:
    """This process's hub, started on first use. Raises (ValueError) while the cluster has no
    socket actor yet; the caller decides how long to wait for one."""
    global _hub
    async with _hub_lock:
        if _hub is None:
            upstream = RayUpstream()  # raises first, before anything else is looked up
            pool = await asyncio.to_thread(replica_session_pool)
            settings = get_settings()
            budget = settings.ws_frame_budget
            if not serves_directly():
                # Through Serve's proxy every frame is a Ray streaming item: at 4,000 frames/s
                # load (a) collapsed to p99 3.6 s; 1,000/s held it near 130–190 ms.
                budget = min(budget, PROXY_FRAME_BUDGET)
            hub = Hub(
                upstream,
                RaySessionPool(pool, replica_session_pool),
                RayBarSource(),
                window_s=settings.ws_window_ms / 1000,
                frame_budget=budget,
            )
            await hub.start()
            settle_heap()
            _hub = hub
        return _hub
