"""SessionActor: one per connected client, the control plane of its live data.

It owns the client's subscriptions (validated channels), its limits and its lifetime; the data
plane — window batches fanned out to sockets — runs in the Serve replica's hub, so no per-client
Ray call sits on the per-message path (docs/fanout.md has the measurements behind this).

SessionPool (named `session-pool`, namespace `kisray`) keeps actors pre-warmed so a new tab does
not pay an actor start-up, leases them to replicas, takes back the sessions of a replica that
stopped renewing (it died), and parks a closed session for a grace period so a reconnecting tab
can resume its subscriptions with the session id it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

import ray

from engine.channels import Channel, parse_channels
from engine.errors import SubscriptionLimitError

log = logging.getLogger(__name__)

POOL_NAME = "session-pool"
NAMESPACE = "kisray"
RESUME_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_channels: int = 60
    max_symbols: int = 20


@dataclass(frozen=True, slots=True)
class Lease:
    """What a replica gets for a new socket: the session, its id, and channels to restore."""

    session_id: str
    session: object  # ray.actor.ActorHandle of a SessionActor
    channels: tuple[str, ...]  # non-empty only when resuming


# Non-async with max_concurrency=1: calls run one at a time in arrival order, so a subscribe
# followed by an unsubscribe from the same socket can never be applied the other way round.
@ray.remote(num_cpus=0, max_concurrency=1)
class SessionActor:
    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()
        self._channels: dict[Channel, None] = {}
        self.client_id: str | None = None

    def ready(self) -> bool:
        return True

    def open(self, client_id: str) -> None:
        self.client_id = client_id

    def subscribe(self, names: object) -> tuple[list[str], list[str]]:
        """Add channels; returns (added, all held). All or nothing; typed errors for bad input."""
        wanted = parse_channels(names)
        added = [c for c in wanted if c not in self._channels]
        total = len(self._channels) + len(added)
        if total > self.limits.max_channels:
            raise SubscriptionLimitError(
                f"at most {self.limits.max_channels} channels per connection ({total} asked)"
            )
        symbols = {c.symbol for c in self._channels} | {c.symbol for c in added}
        if len(symbols) > self.limits.max_symbols:
            raise SubscriptionLimitError(
                f"at most {self.limits.max_symbols} symbols per connection ({len(symbols)} asked)"
            )
        self._channels.update(dict.fromkeys(added))
        return [str(c) for c in added], self.channels()

    def unsubscribe(self, names: object) -> tuple[list[str], list[str]]:
        gone = [c for c in parse_channels(names) if c in self._channels]
        for channel in gone:
            del self._channels[channel]
        return [str(c) for c in gone], self.channels()

    def channels(self) -> list[str]:
        return [str(c) for c in self._channels]

    def reset(self) -> None:
        self._channels.clear()
        self.client_id = None


@ray.remote(num_cpus=0)
class SessionPool:
    """Pre-warmed SessionActors, leased to replicas; see the module doc."""

    def __init__(
        self,
        warm: int = 8,
        lease_s: float = 15.0,
        park_s: float = 30.0,
        limits: SessionLimits | None = None,
    ) -> None:
        self.warm = warm
        self.lease_s = lease_s
        self.park_s = park_s
        self.limits = limits or SessionLimits()
        self._idle: list[object] = []
        self._leased: dict[str, tuple[object, str, float]] = {}  # id → (actor, replica, expiry)
        self._parked: dict[str, tuple[object, float]] = {}  # id → (actor, expiry)
        self._released = asyncio.Condition()  # a lease ended: a waiting resume may take it
        self._starting = 0
        self._hold_until = 0.0
        self.started = 0
        self.reclaimed = 0
        self._refill: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def _start_one(self) -> None:
        self._starting += 1
        try:
            actor = SessionActor.remote(self.limits)
            await actor.ready.remote()
            self._idle.append(actor)
            self.started += 1
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

    async def acquire(self, client_id: str, replica_id: str, resume: str | None = None) -> Lease:
        self._ensure_tasks()
        if resume:
            await self._wait_for_release(resume)
        parked = self._parked.pop(resume, None) if resume else None
        if parked is not None and resume is not None:
            actor = parked[0]
            session_id = resume
            channels = tuple(await actor.channels.remote())
        else:
            if not self._idle:
                await self._start_one()  # the pool ran dry: pay one start-up
            actor = self._idle.pop()
            session_id = uuid.uuid4().hex
            channels = ()
        self._leased[session_id] = (actor, replica_id, time.monotonic() + self.lease_s)
        actor.open.remote(client_id)  # bookkeeping only: the new tab does not wait for it
        self._ensure_tasks()  # refill behind the lease, not in front of it
        return Lease(session_id, actor, channels)

    async def _wait_for_release(self, session_id: str) -> None:
        """A tab that reconnects at once can be faster than its old socket's release (the server
        notices the close a moment later): give that release a moment before starting afresh."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RESUME_WAIT_S), self._released:
                await self._released.wait_for(lambda: session_id not in self._leased)

    async def renew(self, replica_id: str, session_ids: list[str]) -> None:
        """One call per replica per period keeps all its sessions alive."""
        expiry = time.monotonic() + self.lease_s
        for sid in session_ids:
            held = self._leased.get(sid)
            if held is not None and held[1] == replica_id:
                self._leased[sid] = (held[0], replica_id, expiry)

    async def release(self, session_id: str, park: bool = True) -> None:
        """The socket closed: park the session for a resume, or reset it back into the pool."""
        held = self._leased.pop(session_id, None)
        if held is None:
            return
        async with self._released:
            self._released.notify_all()
        if park and self.park_s > 0:
            self._parked[session_id] = (held[0], time.monotonic() + self.park_s)
        else:
            await self._recycle(held[0])

    async def _recycle(self, actor: object) -> None:
        with contextlib.suppress(ray.exceptions.RayActorError):
            await actor.reset.remote()
            self._idle.append(actor)

    async def sweep(self) -> int:
        now = time.monotonic()
        expired = [sid for sid, (_, _, exp) in self._leased.items() if exp <= now]
        for sid in expired:
            log.info("session %s: its replica stopped renewing; reclaimed", sid)
            await self._recycle(self._leased.pop(sid)[0])
        stale = [sid for sid, (_, exp) in self._parked.items() if exp <= now]
        for sid in stale:
            await self._recycle(self._parked.pop(sid)[0])
        self.reclaimed += len(expired)
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
        }


def session_pool(warm: int = 8, **options: object):
    """The named pool, created on first use (detached: it outlives the replica that made it)."""
    return SessionPool.options(
        name=POOL_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(warm, **options)
