"""SessionActor: one per connected client, the control plane of its live data.

It owns the client's subscriptions (validated channels), its limits and its lifetime; the data
plane — window batches fanned out to sockets — runs in the Serve replica's hub, so no per-client
Ray call sits on the per-message path (docs/fanout.md has the measurements behind this).

SessionPool (named `session-pool`, namespace `kisray`) keeps actors pre-warmed so a new tab does
not pay an actor start-up, leases them to replicas, takes back the sessions of a replica that
stopped renewing (it died), and parks a closed session for a grace period so a reconnecting tab
can resume its subscriptions with the session id it was given.

Healing: the pool restarts when its process dies (its session actors die with it: they are
owned by its process), never hands out an idle actor that does not answer, and `adopt` gives a
live session whose actor died a new one under the same id with the channels the replica still
delivers, so the tab never notices (docs/operations.md, "Faults").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors.names import NAMESPACE, SESSION_POOL
from engine.live.channels import Channel
from engine.live.ports import LeaseRequest
from engine.live.session_state import SessionLimits, SessionState

DEFAULT_LIMITS = SessionLimits()

log = logging.getLogger(__name__)

RESUME_WAIT_S = 2.0
# A resume can come before the old socket's lease was even made (a new tab gets its id at once
# and its actor in the background, which takes an actor start on a busy node).
PENDING_WAIT_S = 10.0
PING_TIMEOUT_S = 3.0  # an idle actor that does not answer within this is taken for dead
CHECK_IDLE_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class Lease:
    """What a replica gets for a new socket: the session, its id, and channels to restore."""

    session_id: str
    session: Any  # ray.actor.ActorHandle of a SessionActor
    channels: tuple[Channel, ...]  # non-empty only when resuming
    limits: SessionLimits = DEFAULT_LIMITS


# Non-async with max_concurrency=1: calls run one at a time in arrival order, so a subscribe
# followed by an unsubscribe from the same socket can never be applied the other way round.
# (ray's signature for ray.remote(...) lists task options only, not max_concurrency.)
@ray.remote(num_cpus=0, max_concurrency=1)  # type: ignore[call-overload]
class SessionActor:
    """The durable copy of one client's session; the replica applies ops first, with the same
    rules (engine.live.session_state), and sends them here in order."""

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.state = SessionState(limits)
        self.client_id: str | None = None

    def ready(self) -> bool:
        return True

    def open(self, client_id: str) -> None:
        self.client_id = client_id

    def subscribe(self, channels: list[Channel]) -> tuple[list[Channel], list[Channel]]:
        return self.state.subscribe(channels)

    def unsubscribe(self, channels: list[Channel]) -> tuple[list[Channel], list[Channel]]:
        return self.state.unsubscribe(channels)

    def replace(self, channels: list[Channel]) -> None:
        self.state.replace(channels)

    def channels(self) -> list[Channel]:
        return self.state.channels()

    def reset(self) -> None:
        self.state = SessionState(self.state.limits)
        self.client_id = None


# Restarts (empty) when its process dies; replicas find it again by name (docs/operations.md).
@ray.remote(num_cpus=0, max_restarts=-1)
class SessionPool:
    """Pre-warmed SessionActors, leased to replicas; see the module doc."""

    def __init__(
        self,
        warm: int,  # KISRAY_WS_SESSION_POOL
        lease_s: float = 15.0,
        park_s: float = 30.0,
        limits: SessionLimits | None = None,
    ) -> None:
        self.warm = warm
        self.lease_s = lease_s
        self.park_s = park_s
        self.limits = limits or SessionLimits()
        self._idle: list[Any] = []
        self._leased: dict[str, tuple[Any, str, float]] = {}  # id → (actor, replica, expiry)
        # id → (actor, expiry, channels the replica delivered when the socket closed, if told)
        self._parked: dict[str, tuple[Any, float, tuple[Channel, ...] | None]] = {}
        self._released = asyncio.Condition()  # a lease ended: a waiting resume may take it
        self._idle_ready = asyncio.Condition()  # an actor became idle: a waiting lease may take it
        # Sessions released before their lease or replacement was made (the tab left first)
        # → (when, park, channels), so the late actor is parked for a resume or recycled.
        self._gone_early: dict[str, tuple[float, bool, tuple[Channel, ...] | None]] = {}
        self._pending: set[str] = set()  # replacements under way: a resume waits for them
        # Sessions a resume took from another replica → (that replica, when): its late release
        # or renewal must neither park nor re-adopt what the tab now holds elsewhere.
        self._moved: dict[str, tuple[str, float]] = {}
        self._starting = 0
        self._hold_until = 0.0
        self.started = 0
        self.reclaimed = 0
        self.replaced = 0  # dead session actors found and replaced
        self._idle_checked = 0.0
        self._refill: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def _start_one(self, keep: bool = True) -> Any:
        """Start an actor; `keep` puts it in the idle list, else the caller takes it."""
        self._starting += 1
        try:
            # mypy ignores class decorators: ray.remote made SessionActor an ActorClass.
            actor = SessionActor.remote(self.limits)  # type: ignore[attr-defined]
            await actor.ready.remote()
            self.started += 1
            if keep:
                await self._add_idle(actor)
            return actor
        finally:
            self._starting -= 1

    async def _fill(self) -> None:
        while len(self._idle) + self._starting < self.warm:
            need = self.warm - len(self._idle) - self._starting
            await asyncio.gather(*(self._start_one() for _ in range(need)))

    def _ensure_tasks(self) -> None:
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._fill())
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def prewarm(self, burst: int, hold_s: float = 300.0) -> int:
        """Have exactly `burst` idle actors for an expected rush of tabs, kept for `hold_s`
        (the steady target stays `warm`); returns how many are idle."""
        need = burst - len(self._idle) - self._starting
        if need > 0:
            await asyncio.gather(*(self._start_one() for _ in range(need)))
        while len(self._idle) > burst:  # idle actors cost memory and a little CPU each
            ray.kill(self._idle.pop())
        self._hold_until = time.monotonic() + hold_s
        self._ensure_tasks()  # after: the refill must not race the burst it would duplicate
        return len(self._idle)

    async def acquire(self, request: LeaseRequest) -> Lease:
        """A session for a socket: the parked one it resumes, or a fresh one (under
        `session_id` when the replica already told the tab its id)."""
        client_id, replica_id = request.client_id, request.replica_id
        resume, session_id = request.resume, request.session_id
        self._ensure_tasks()
        if resume:
            moved = await self._wait_for_release(resume, replica_id)
            if moved is not None:
                return await self._hand_over(resume, moved, replica_id, client_id)
        parked = self._parked.pop(resume, None) if resume else None
        if parked is not None and resume is not None:
            actor, _, kept = parked
            session_id = resume
            if kept is None:  # released without its channels: the actor's copy is all we have
                with contextlib.suppress(RayActorError):
                    kept = tuple(await actor.channels.remote())
            channels = kept or ()
            if not await self._answers(actor):  # it died while parked
                self._discard(actor)
                actor = await self._fresh_session(channels)
        elif session_id is not None and session_id in self._leased:
            # A retried call (the first may have run before its answer was lost): the same lease.
            return Lease(session_id, self._leased[session_id][0], (), self.limits)
        elif session_id is not None:  # the tab has its id: it may leave while we wait
            async with self._making(session_id):
                actor = await self._take_idle()
                if await self._settle_gone(session_id, actor):
                    return Lease(session_id, actor, (), self.limits)
                return self._lease(session_id, actor, replica_id, client_id, ())
        else:
            actor = await self._take_idle()
            session_id = uuid.uuid4().hex
            channels = ()
        return self._lease(session_id, actor, replica_id, client_id, channels)

    def _lease(
        self,
        session_id: str,
        actor: Any,
        replica_id: str,
        client_id: str,
        channels: tuple[Channel, ...],
    ) -> Lease:
        self._leased[session_id] = (actor, replica_id, time.monotonic() + self.lease_s)
        actor.open.remote(client_id)  # bookkeeping only: the new tab does not wait for it
        self._ensure_tasks()  # refill behind the lease, not in front of it
        return Lease(session_id, actor, channels, self.limits)

    async def adopt(self, session_id: str, replica_id: str, channels: list[Channel]) -> Lease:
        """A live socket's session actor died (killed, its node lost, or this pool restarted):
        a new actor under the same id, holding the channels the replica still delivers."""
        current = self._leased.get(session_id)
        if current is not None and self._moved_from(session_id, replica_id):
            return Lease(session_id, current[0], (), self.limits)  # the tab is elsewhere now
        held = self._leased.pop(session_id, None)
        if held is not None:
            with contextlib.suppress(RayActorError):
                ray.kill(held[0])  # dead or not, it is no longer this session's
        self.replaced += 1
        async with self._making(session_id):
            actor = await self._fresh_session(tuple(channels))
            if await self._settle_gone(session_id, actor):
                return Lease(session_id, actor, (), self.limits)
            self._leased[session_id] = (actor, replica_id, time.monotonic() + self.lease_s)
        self._ensure_tasks()
        log.info("session %s: its actor was lost; replaced", session_id)
        return Lease(session_id, actor, (), self.limits)

    @contextlib.asynccontextmanager
    async def _making(self, session_id: str) -> AsyncIterator[None]:
        """An actor is being made for this id: a resume of it waits until it is leased, parked
        or recycled (or its making failed)."""
        self._pending.add(session_id)
        try:
            yield
        finally:
            self._pending.discard(session_id)
            async with self._released:
                self._released.notify_all()

    async def _settle_gone(self, session_id: str, actor: Any) -> bool:
        """If the socket closed while its actor was being made: park the actor as its release
        asked (or reset it) and say so."""
        gone = self._gone_early.pop(session_id, None)
        if gone is None:
            return False
        _, park, channels = gone
        if park and channels:  # a fresh actor: it holds what the socket held when it closed
            with contextlib.suppress(RayActorError):
                await actor.replace.remote(list(channels))
        await self._park_or_recycle(session_id, actor, park, channels)
        return True

    async def _fresh_session(self, channels: tuple[Channel, ...]) -> Any:
        actor = await self._take_idle()
        if channels:
            await actor.replace.remote(list(channels))
        return actor

    async def _take_idle(self) -> Any:
        """An idle actor that answers: a dead one (killed, or lost with its node) is dropped.
        When none is idle, start one, but never more than `warm` at a time: a rush of tabs
        (many of which leave again) waits for the next one ready instead of queueing an actor
        start each, which kept a 2-core node busy starting actors long after the rush."""
        while True:
            while self._idle:
                actor = self._idle.pop()
                if await self._answers(actor):
                    return actor
                self._discard(actor)
            if self._starting < max(self.warm, 1):
                return await self._start_one(keep=False)
            async with self._idle_ready:
                await self._idle_ready.wait()

    async def _add_idle(self, actor: Any) -> None:
        self._idle.append(actor)
        async with self._idle_ready:
            self._idle_ready.notify()

    @staticmethod
    async def _answers(actor: Any) -> bool:
        try:
            return await asyncio.wait_for(actor.ready.remote(), PING_TIMEOUT_S)
        except (RayActorError, TimeoutError):
            return False

    async def _check_idle(self) -> None:
        """Drop idle actors that died, so the pool refills instead of handing them out."""
        idle = list(self._idle)  # taken or added while the pings are out: judged next time
        alive = await asyncio.gather(*(self._answers(a) for a in idle))
        dead = [a for a, ok in zip(idle, alive, strict=True) if not ok]
        for actor in dead:
            with contextlib.suppress(ValueError):
                self._idle.remove(actor)
            self._discard(actor)

    def _discard(self, actor: Any) -> None:
        """Drop an actor that did not answer: killed too, since on a busy machine a live one
        can miss the ping, and a live actor nobody holds would only cost memory."""
        self.replaced += 1
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)

    async def _wait_for_release(self, session_id: str, replica_id: str) -> Any:
        """A tab that reconnects at once can be faster than its old socket's release (the server
        notices the close a moment later): give that release a moment before starting afresh.
        A session still leased to another replica is returned at once: that replica died or
        lost the tab, and waiting for its release would only keep the tab waiting."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PENDING_WAIT_S), self._released:
                await self._released.wait_for(lambda: session_id not in self._pending)
        held = self._leased.get(session_id)
        if held is not None and held[1] != replica_id:
            return held
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RESUME_WAIT_S), self._released:
                await self._released.wait_for(lambda: session_id not in self._leased)
        return None

    async def _hand_over(
        self, session_id: str, held: tuple[Any, str, float], replica_id: str, client_id: str
    ) -> Lease:
        """Move a leased session to the replica the tab resumed on, with its channels."""
        actor, old_replica, _ = held
        self._moved[session_id] = (old_replica, time.monotonic())
        channels: tuple[Channel, ...] = ()
        with contextlib.suppress(RayActorError):
            channels = tuple(await actor.channels.remote())
        if not await self._answers(actor):
            self._discard(actor)
            actor = await self._fresh_session(channels)
        log.info("session %s: resumed on replica %s, from %s", session_id, replica_id, old_replica)
        return self._lease(session_id, actor, replica_id, client_id, channels)

    def _moved_from(self, session_id: str, replica_id: str | None) -> bool:
        moved = self._moved.get(session_id)
        return moved is not None and moved[0] == replica_id

    async def renew(self, replica_id: str, session_ids: list[str]) -> list[str]:
        """One call per replica per period keeps all its sessions alive. Returns the ones this
        pool does not hold for that replica (it restarted, or reclaimed them): the replica has
        them adopted again."""
        self._ensure_tasks()  # a restarted pool refills at the first renewal, not the first tab
        expiry = time.monotonic() + self.lease_s
        unknown = []
        for sid in session_ids:
            held = self._leased.get(sid)
            if held is not None and held[1] == replica_id:
                self._leased[sid] = (held[0], replica_id, expiry)
            elif sid in self._pending or self._moved_from(sid, replica_id):
                pass  # being made (not lost: no second adopt), or moved to another replica
            else:
                unknown.append(sid)
        return unknown

    async def release(
        self,
        session_id: str,
        park: bool = True,
        channels: tuple[Channel, ...] | None = None,
        replica_id: str | None = None,
    ) -> None:
        """The socket closed: park the session for a resume (with the channels its replica
        delivered, in case its actor dies meanwhile), or reset it back into the pool. A release
        from a replica the session has since moved from changes nothing."""
        if self._moved_from(session_id, replica_id):
            return
        kept = tuple(channels) if channels is not None else None
        held = self._leased.pop(session_id, None)
        if held is None:
            # Its lease or replacement may still be coming: settled when it does.
            self._gone_early[session_id] = (time.monotonic(), park, kept)
            return
        async with self._released:
            self._released.notify_all()
        await self._park_or_recycle(session_id, held[0], park, kept)

    async def _park_or_recycle(
        self, session_id: str, actor: Any, park: bool, channels: tuple[Channel, ...] | None
    ) -> None:
        """A closed socket's actor: parked for a resume (with the channels its replica
        delivered, if told) or reset back into the pool."""
        if park and self.park_s > 0:
            self._parked[session_id] = (actor, time.monotonic() + self.park_s, channels)
        else:
            await self._recycle(actor)

    async def _recycle(self, actor: Any) -> None:
        with contextlib.suppress(RayActorError):
            await actor.reset.remote()
            await self._add_idle(actor)

    async def sweep(self) -> int:
        now = time.monotonic()
        expired = [sid for sid, (_, _, exp) in self._leased.items() if exp <= now]
        for sid in expired:
            log.info("session %s: its replica stopped renewing; reclaimed", sid)
            await self._recycle(self._leased.pop(sid)[0])
        self._gone_early = {
            s: gone for s, gone in self._gone_early.items() if now - gone[0] < self.lease_s
        }
        self._moved = {s: m for s, m in self._moved.items() if now - m[1] < self.lease_s}
        stale = [sid for sid, (_, exp, _) in self._parked.items() if exp <= now]
        for sid in stale:
            await self._recycle(self._parked.pop(sid)[0])
        self.reclaimed += len(expired)
        if now - self._idle_checked >= CHECK_IDLE_EVERY_S:
            self._idle_checked = now
            await self._check_idle()
        # Shrink back to the warm size after a burst: extra idle actors only cost memory.
        while len(self._idle) > self.warm and now >= self._hold_until:
            ray.kill(self._idle.pop())
        return len(expired)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.lease_s / 3))
            try:
                await self.sweep()
            except Exception:
                log.exception("session sweep failed")

    async def stats(self) -> dict[str, int]:
        return {
            "idle": len(self._idle),
            "leased": len(self._leased),
            "parked": len(self._parked),
            "starting": self._starting,
            "started": self.started,
            "reclaimed": self.reclaimed,
            "replaced": self.replaced,
        }


def session_pool(warm: int, **options: object):
    """The named pool, created on first use (detached: it outlives the replica that made it)."""
    return SessionPool.options(  # type: ignore[attr-defined]  # mypy ignores class decorators
        name=SESSION_POOL, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(warm, **options)
