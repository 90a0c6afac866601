"""SessionActor: the control plane of connected clients' live data.

A session is one client's subscriptions (validated channels), limits and lifetime. Each
SessionActor hosts up to KISRAY_SESSIONS_PER_ACTOR sessions, each addressed by its slot
(`SessionSlot`); 1 is one actor per client. The data plane — window batches fanned out to
sockets — runs in the Serve replica's hub, so no per-client Ray call sits on the per-message path
(docs/fanout.md has the measurements behind this and behind the default).

SessionPool (named `session-pool`, namespace `kisray`) keeps actors pre-warmed so a new tab does
not pay an actor start-up, leases them to replicas, takes back the sessions of a replica that
stopped renewing (it died), and parks a closed session for a grace period so a reconnecting tab
can resume its subscriptions with the session id it was given.

Healing: the pool restarts when its process dies (its session actors die with it: they are
owned by its process), never hands out an idle slot whose actor does not answer, and `adopt` gives
a live session whose actor died a new slot under the same id with the channels the replica still
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
from typing import Any, TypeAlias, TypeVar

import ray
from ray.exceptions import RayActorError

from actors.names import NAMESPACE, SESSION_POOL
from engine.live.channels import Channel
from engine.live.ports import LeaseRequest
from engine.live.session_state import SessionLimits, SessionState

DEFAULT_LIMITS = SessionLimits()
SESSION_OPS = frozenset({"subscribe", "unsubscribe", "replace"})
SessionOp: TypeAlias = tuple[str, str, list[Channel]]  # (slot, op, channels)
# `release`'s arguments: (session id, park, channels, replica id)
Release: TypeAlias = tuple[str, bool, tuple[Channel, ...] | None, str | None]
T = TypeVar("T")

log = logging.getLogger(__name__)

RESUME_WAIT_S = 2.0
# A resume can come before the old socket's lease was even made (a new tab gets its id at once
# and its actor in the background, which takes an actor start on a busy node).
PENDING_WAIT_S = 10.0
PING_TIMEOUT_S = 3.0  # an idle actor that does not answer within this is taken for dead
CHECK_IDLE_EVERY_S = 5.0
ALIVE_FOR_S = 1.0  # an actor that answered this recently is not pinged again


@dataclass(frozen=True, slots=True)
class Lease:
    """What a replica gets for a new socket: the session, its id, and channels to restore."""

    session_id: str
    session: SessionSlot
    channels: tuple[Channel, ...]  # non-empty only when resuming
    limits: SessionLimits = DEFAULT_LIMITS


# Non-async with max_concurrency=1: calls run one at a time in arrival order, so a subscribe
# followed by an unsubscribe from the same socket can never be applied the other way round.
# (ray's signature for ray.remote(...) lists task options only, not max_concurrency.)
@ray.remote(num_cpus=0, max_concurrency=1)  # type: ignore[call-overload]
class SessionActor:
    """The durable copies of its clients' sessions, one per slot; the replica applies ops
    first, with the same rules (engine.live.session_state), and sends them here in order."""

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()
        self.sessions: dict[str, SessionState] = {}

    def _session(self, slot: str) -> SessionState:
        state = self.sessions.get(slot)
        if state is None:
            state = self.sessions[slot] = SessionState(self.limits)
        return state

    def ready(self) -> bool:
        return True

    def subscribe(self, slot: str, channels: list[Channel]) -> tuple[list[Channel], list[Channel]]:
        return self._session(slot).subscribe(channels)

    def unsubscribe(
        self, slot: str, channels: list[Channel]
    ) -> tuple[list[Channel], list[Channel]]:
        return self._session(slot).unsubscribe(channels)

    def replace(self, slot: str, channels: list[Channel]) -> None:
        self._session(slot).replace(channels)

    def channels(self, slot: str) -> list[Channel]:
        state = self.sessions.get(slot)
        return state.channels() if state is not None else []

    def reset(self, slot: str) -> None:
        self.sessions.pop(slot, None)

    def apply(self, ops: list[SessionOp]) -> list[object]:
        """Several sessions' ops, from one replica, in the order sent: one call instead of
        one per op (engine.live.batching). Each op's answer, or the error it raised."""
        answers: list[object] = []
        for slot, op, channels in ops:
            try:
                if op not in SESSION_OPS:
                    raise ValueError(f"unknown session op {op!r}")
                answers.append(getattr(self, op)(slot, channels))
            except Exception as exc:
                answers.append(exc)
        return answers

    def hosted(self) -> int:
        """Sessions holding channels here (tests look at it)."""
        return sum(1 for state in self.sessions.values() if state.channels())


@dataclass(frozen=True, slots=True)
class SessionSlot:
    """One session inside a SessionActor: what the pool leases and the replica calls. Each call
    returns the actor call's ObjectRef; calls from one caller keep their order."""

    actor: Any  # ray.actor.ActorHandle of a SessionActor
    host: str  # the pool's id for that actor
    slot: str

    def ready(self) -> Any:
        return self.actor.ready.remote()

    def subscribe(self, channels: list[Channel]) -> Any:
        return self.actor.subscribe.remote(self.slot, channels)

    def unsubscribe(self, channels: list[Channel]) -> Any:
        return self.actor.unsubscribe.remote(self.slot, channels)

    def replace(self, channels: list[Channel]) -> Any:
        return self.actor.replace.remote(self.slot, channels)

    def channels(self) -> Any:
        return self.actor.channels.remote(self.slot)

    def reset(self) -> Any:
        return self.actor.reset.remote(self.slot)


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
        per_actor: int = 1,  # KISRAY_SESSIONS_PER_ACTOR
    ) -> None:
        self.warm = warm
        self.per_actor = max(1, per_actor)
        self.lease_s = lease_s
        self.park_s = park_s
        self.limits = limits or SessionLimits()
        self._idle: list[SessionSlot] = []
        self._leased: dict[str, tuple[SessionSlot, str, float]] = {}  # id → (slot, replica, expiry)
        # id → (slot, expiry, channels the replica delivered when the socket closed, if told)
        self._parked: dict[str, tuple[SessionSlot, float, tuple[Channel, ...] | None]] = {}
        self._released = asyncio.Condition()  # a lease ended: a waiting resume may take it
        self._idle_ready = asyncio.Condition()  # a slot became idle: a waiting lease may take it
        # Sessions released before their lease or replacement was made (the tab left first)
        # → (when, park, channels), so the late actor is parked for a resume or recycled.
        self._gone_early: dict[str, tuple[float, bool, tuple[Channel, ...] | None]] = {}
        self._pending: set[str] = set()  # replacements under way: a resume waits for them
        self._recycling: set[asyncio.Task[None]] = set()  # released actors being reset
        # Sessions a resume took from another replica → (that replica, when): its late release
        # or renewal must neither park nor re-adopt what the tab now holds elsewhere.
        self._moved: dict[str, tuple[str, float]] = {}
        self._starting = 0  # actors being started
        self._hold_until = 0.0
        self.started = 0  # actors started
        self.reclaimed = 0
        self.replaced = 0  # dead session actors found and replaced
        self._idle_checked = 0.0
        self._refill: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._answered_at: dict[str, float] = {}  # actor (host) → when it last answered
        self._pings: dict[str, asyncio.Future[bool]] = {}  # pings under way, by actor

    async def _start_one(self, keep: bool = True) -> SessionSlot:
        """Start an actor with `per_actor` idle slots; unless `keep`, the caller takes one."""
        self._starting += 1
        try:
            # mypy ignores class decorators: ray.remote made SessionActor an ActorClass.
            actor = SessionActor.options(  # type: ignore[attr-defined]
                scheduling_strategy="SPREAD"  # sessions over the cluster's nodes
            ).remote(self.limits)
            await actor.ready.remote()
            self.started += 1
            host = uuid.uuid4().hex
            slots = [SessionSlot(actor, host, uuid.uuid4().hex) for _ in range(self.per_actor)]
            taken = slots if keep else slots[1:]
            for slot in taken:
                await self._add_idle(slot)
            return slots[0]
        finally:
            self._starting -= 1

    def _idle_or_starting(self) -> int:
        return len(self._idle) + self._starting * self.per_actor

    def _actors_for(self, slots: int) -> int:
        return -(-max(0, slots) // self.per_actor)

    async def _fill(self) -> None:
        while self._idle_or_starting() < self.warm:
            need = self._actors_for(self.warm - self._idle_or_starting())
            await asyncio.gather(*(self._start_one() for _ in range(need)))

    def _ensure_tasks(self) -> None:
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._fill())
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def prewarm(self, burst: int, hold_s: float = 300.0) -> int:
        """Have `burst` idle slots (exactly, with one session per actor) for an expected rush of
        tabs, kept for `hold_s` (the steady target stays `warm`); returns how many are idle."""
        need = self._actors_for(burst - self._idle_or_starting())
        if need > 0:
            await asyncio.gather(*(self._start_one() for _ in range(need)))
        self._shrink(burst)  # idle actors cost memory and a little CPU each
        self._hold_until = time.monotonic() + hold_s
        self._ensure_tasks()  # after: the refill must not race the burst it would duplicate
        return len(self._idle)

    async def acquire_many(self, requests: list[LeaseRequest]) -> list[Lease | Exception]:
        """Sessions for new sockets, one call per batch (engine.live.batching); each request's
        lease, or the error it met. Resumes go one by one (`acquire`): one may wait seconds
        for its old socket's release, and a batch is answered when its last lease is made."""
        answers = await asyncio.gather(*(self.acquire(r) for r in requests), return_exceptions=True)
        return [_as_answer(a) for a in answers]

    async def acquire(self, request: LeaseRequest) -> Lease:
        """A session for a socket: the parked one it resumes, or a fresh one (under
        `session_id` when the replica already told the tab its id)."""
        replica_id = request.replica_id
        resume, session_id = request.resume, request.session_id
        self._ensure_tasks()
        if resume:
            moved = await self._wait_for_release(resume, replica_id)
            if moved is not None:
                return await self._hand_over(resume, moved, replica_id)
        parked = self._parked.pop(resume, None) if resume else None
        if parked is not None and resume is not None:
            actor, _, kept = parked
            session_id = resume
            if kept is None:  # released without its channels: the actor's copy is all we have
                with contextlib.suppress(RayActorError):
                    kept = tuple(await actor.channels())
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
                return self._lease(session_id, actor, replica_id, ())
        else:
            actor = await self._take_idle()
            session_id = uuid.uuid4().hex
            channels = ()
        return self._lease(session_id, actor, replica_id, channels)

    def _lease(
        self,
        session_id: str,
        actor: SessionSlot,
        replica_id: str,
        channels: tuple[Channel, ...],
    ) -> Lease:
        self._leased[session_id] = (actor, replica_id, time.monotonic() + self.lease_s)
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
            self._drop(held[0])  # dead or not, it is no longer this session's
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

    async def _settle_gone(self, session_id: str, actor: SessionSlot) -> bool:
        """If the socket closed while its actor was being made: park the actor as its release
        asked (or reset it) and say so."""
        gone = self._gone_early.pop(session_id, None)
        if gone is None:
            return False
        _, park, channels = gone
        if park and channels:  # a fresh actor: it holds what the socket held when it closed
            with contextlib.suppress(RayActorError):
                await actor.replace(list(channels))
        await self._park_or_recycle(session_id, actor, park, channels)
        return True

    async def _fresh_session(self, channels: tuple[Channel, ...]) -> SessionSlot:
        slot = await self._take_idle()
        if channels:
            await slot.replace(list(channels))
        return slot

    async def _take_idle(self) -> SessionSlot:
        """An idle slot whose actor answers: a dead one (killed, or lost with its node) is
        dropped. When none is idle, start an actor, but never more than `warm` sessions' worth
        at a time: a rush of tabs (many of which leave again) waits for the next one ready
        instead of queueing an actor start each, which kept a 2-core node busy starting actors
        long after the rush."""
        while True:
            while self._idle:
                slot = self._idle.pop()
                if await self._answers(slot):
                    return slot
                self._discard(slot)
            if self._starting < max(self._actors_for(self.warm), 1):
                return await self._start_one(keep=False)
            async with self._idle_ready:
                await self._idle_ready.wait()

    async def _add_idle(self, slot: SessionSlot) -> None:
        self._idle.append(slot)
        async with self._idle_ready:
            self._idle_ready.notify()

    async def _answers(self, slot: SessionSlot) -> bool:
        """Whether the slot's actor answers. One ping per actor at a time, and an actor that
        answered within ALIVE_FOR_S is not asked again: a batch of leases from one actor pinged
        it once per slot. (One that died meanwhile fails the replica's next op, which replaces
        it: ClientSocket._adopt.)"""
        if time.monotonic() - self._answered_at.get(slot.host, float("-inf")) < ALIVE_FOR_S:
            return True
        ping = self._pings.get(slot.host)
        if ping is None:
            ping = self._pings[slot.host] = asyncio.ensure_future(self._ping(slot))
        return await asyncio.shield(ping)

    async def _ping(self, slot: SessionSlot) -> bool:
        try:
            await asyncio.wait_for(slot.ready(), PING_TIMEOUT_S)
        except (RayActorError, TimeoutError):
            self._answered_at.pop(slot.host, None)
            return False
        finally:
            self._pings.pop(slot.host, None)
        self._answered_at[slot.host] = time.monotonic()
        return True

    async def _check_idle(self) -> None:
        """Drop idle slots whose actor died, so the pool refills instead of handing them out.
        One ping per actor."""
        first: dict[str, SessionSlot] = {}
        for slot in self._idle:  # taken or added while the pings are out: judged next time
            first.setdefault(slot.host, slot)
        alive = await asyncio.gather(*(self._answers(s) for s in first.values()))
        for slot, ok in zip(first.values(), alive, strict=True):
            if not ok:
                self._discard(slot)

    def _busy_hosts(self) -> set[str]:
        """Actors holding a leased or parked session."""
        held = [slot for slot, _, _ in self._leased.values()]
        held += [slot for slot, _, _ in self._parked.values()]
        return {slot.host for slot in held}

    def _stop_actor(self, slot: SessionSlot) -> None:
        """Stop a slot's actor (dead or not) and forget its idle slots."""
        self._idle = [s for s in self._idle if s.host != slot.host]
        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)

    def _discard(self, slot: SessionSlot) -> None:
        """Drop a slot whose actor did not answer, with that actor's other idle slots; the
        actor is stopped too unless it holds live sessions (on a busy machine a live actor can
        miss the ping, and a live actor nobody holds would only cost memory)."""
        self.replaced += 1
        if slot.host in self._busy_hosts():
            self._idle = [s for s in self._idle if s.host != slot.host]
        else:
            self._stop_actor(slot)

    def _drop(self, slot: SessionSlot) -> None:
        """A session's slot no longer in use (its actor may be dead): its actor goes when it
        hosts nothing else; else the slot is cleared and not reused (it may have failed)."""
        if slot.host in self._busy_hosts():
            with contextlib.suppress(Exception):
                slot.reset()
        else:
            self._stop_actor(slot)

    def _shrink(self, target: int) -> None:
        """Stop actors whose slots are all idle while more than `target` slots are idle."""
        if len(self._idle) <= target:
            return
        busy = self._busy_hosts()
        by_host: dict[str, list[SessionSlot]] = {}
        for slot in self._idle:
            by_host.setdefault(slot.host, []).append(slot)
        for host, slots in by_host.items():
            if host in busy or len(slots) < self.per_actor:
                continue  # it hosts a session: its idle slots stay for the next tabs
            if len(self._idle) - len(slots) < target:
                continue
            self._stop_actor(slots[0])

    async def _wait_for_release(
        self, session_id: str, replica_id: str
    ) -> tuple[SessionSlot, str, float] | None:
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
        self,
        session_id: str,
        held: tuple[SessionSlot, str, float],
        replica_id: str,
    ) -> Lease:
        """Move a leased session to the replica the tab resumed on, with its channels."""
        actor, old_replica, _ = held
        self._moved[session_id] = (old_replica, time.monotonic())
        channels: tuple[Channel, ...] = ()
        with contextlib.suppress(RayActorError):
            channels = tuple(await actor.channels())
        if not await self._answers(actor):
            self._discard(actor)
            actor = await self._fresh_session(channels)
        log.info("session %s: resumed on replica %s, from %s", session_id, replica_id, old_replica)
        return self._lease(session_id, actor, replica_id, channels)

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
        # Not waiting for a reset: a batch of releases (release_many) is answered when its last
        # one is, and one slow session actor would hold up every later release of the replica.
        await self._park_or_recycle(session_id, held[0], park, kept, wait=False)

    async def release_many(self, releases: list[Release]) -> list[Exception | None]:
        """Closed sockets' releases, one call per batch (engine.live.batching): each as
        `release`, its error (if any) in its place. A thousand tabs leaving at once made a
        thousand calls, ~10 % of their replica's time while they went."""
        done = await asyncio.gather(*(self.release(*r) for r in releases), return_exceptions=True)
        return [_as_answer(a) for a in done]

    async def _park_or_recycle(
        self,
        session_id: str,
        actor: SessionSlot,
        park: bool,
        channels: tuple[Channel, ...] | None,
        wait: bool = True,
    ) -> None:
        """A closed socket's actor: parked for a resume (with the channels its replica
        delivered, if told) or reset back into the pool (in the background unless `wait`)."""
        if park and self.park_s > 0:
            self._parked[session_id] = (actor, time.monotonic() + self.park_s, channels)
        elif wait:
            await self._recycle(actor)
        else:
            task = asyncio.create_task(self._recycle(actor))
            self._recycling.add(task)  # held: the loop keeps only weak references to tasks
            task.add_done_callback(self._recycling.discard)

    async def _recycle(self, slot: SessionSlot) -> None:
        with contextlib.suppress(RayActorError):
            await slot.reset()
            await self._add_idle(slot)

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
        if now >= self._hold_until:
            self._shrink(self.warm)
        return len(expired)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.lease_s / 3))
            try:
                await self.sweep()
            except Exception:
                log.exception("session sweep failed")

    async def stats(self) -> dict[str, int]:
        self._ensure_tasks()  # /health asks at start-up: the pool warms before the first tab
        return {
            "idle": len(self._idle),
            "leased": len(self._leased),
            "parked": len(self._parked),
            "starting": self._starting,
            "started": self.started,
            "actors": len({s.host for s in self._idle} | self._busy_hosts()),
            "sessions_per_actor": self.per_actor,
            "reclaimed": self.reclaimed,
            "replaced": self.replaced,
        }


def _as_answer(answer: T | BaseException) -> T | Exception:
    if isinstance(answer, BaseException) and not isinstance(answer, Exception):
        return RuntimeError(f"not done: {answer!r}")  # a cancelled acquire or release
    return answer


def session_pool(warm: int, per_actor: int, **options: object):
    """The named pool, created on first use (detached: it outlives the replica that made it)."""
    return SessionPool.options(  # type: ignore[attr-defined]  # mypy ignores class decorators
        name=SESSION_POOL, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(warm, per_actor=per_actor, **options)
