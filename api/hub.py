"""The per-replica hub: one consumer at the KIS socket actor, fanned out in-process to sockets.

The hub holds ONE registration at `kis-socket` for the union of its sockets' channels and pulls
one micro-batch per window with a single outstanding call (so batches arrive in order and the
in-flight count is 1 whatever the number of clients). Each window is rendered once per channel
(engine.channels.WindowCoalescer) and appended to the subscribed sockets' outboxes
(engine.fanout). Ray calls per second are therefore about 1/window per replica, not per client.

The window adapts. Every socket costs about one frame per window wherever it goes (through Serve's
proxy each frame is a Ray streaming item), so the window is at least sockets / FRAME_BUDGET: the
frames per second of a replica stay bounded as clients grow. On top, when rendering and fan-out
take more than half of the window it doubles (up to `max_window_s`) and shrinks back when cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable

import ray

from engine.channels import Channel, WindowCoalescer, encode
from engine.errors import UnknownConsumerError
from engine.fanout import FanoutIndex, Outbox
from engine.kis.registry import Registration

log = logging.getLogger(__name__)

SOCKET_ACTOR = "kis-socket"
NAMESPACE = "kisray"
PULL_WAIT_S = 1.0
FRAME_BUDGET = 1000.0  # frames per second per replica, all sockets together
RENEW_EVERY_S = 3.0


def _cause(exc: BaseException) -> BaseException:
    return getattr(exc, "cause", None) or exc


class Hub:
    def __init__(
        self,
        source: object,
        pool: object | None = None,
        *,
        window_s: float = 0.02,
        max_window_s: float = 0.1,
        resolve: Callable[[], object] | None = None,
    ) -> None:
        self.source = source  # actor handle with the KisFeed consumer methods
        self.resolve = resolve
        self.pool = pool  # SessionPool handle, renewed for all sockets at once
        self.replica_id = uuid.uuid4().hex[:12]
        self.consumer_id = f"hub-{self.replica_id}"
        self.base_window_s = window_s
        self.window_s = window_s
        self.max_window_s = max_window_s
        self.index = FanoutIndex()
        self.window = WindowCoalescer()
        self.sessions: dict[Outbox, str] = {}
        self._regs: Counter[Registration] = Counter()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.upstream: str | None = None
        self.batches = 0
        self.records = 0
        self.deliveries = 0
        self.pull_s = 0.0
        self.last_batch_records = 0

    async def start(self) -> None:
        await self.source.register.remote(self.consumer_id)
        self._tasks = [
            asyncio.create_task(self._pump(), name="hub-pump"),
            asyncio.create_task(self._renew(), name="hub-renew"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.source.unregister.remote(self.consumer_id)

    # -- sockets ------------------------------------------------------------------------------

    def attach(self, outbox: Outbox, session_id: str) -> None:
        self.index.add(outbox)
        self.sessions[outbox] = session_id
        if self.upstream is not None:
            outbox.offer(None, encode({"type": "status", "upstream": self.upstream}))

    async def detach(self, outbox: Outbox) -> None:
        channels = self.index.channels_of(outbox)
        self.index.remove(outbox)
        self.sessions.pop(outbox, None)
        await self._release([c.registration for c in channels])

    async def subscribe(self, outbox: Outbox, channels: list[Channel]) -> None:
        """Start delivering `channels` to the socket (the session actor validated them)."""
        async with self._lock:
            regs = [c.registration for c in channels if c not in self.index.channels_of(outbox)]
            new = [r for r in dict.fromkeys(regs) if self._regs[r] == 0]
            if new:
                await self.source.subscribe.remote(self.consumer_id, new)  # may raise the limit
            self._regs.update(regs)
            self.index.subscribe(outbox, channels)
        for channel in channels:
            if channel.kind == "candle":
                latest = self.window.latest_candle(channel.symbol)
                if latest is not None:
                    outbox.offer(channel, latest)

    async def unsubscribe(self, outbox: Outbox, channels: list[Channel]) -> None:
        held = self.index.channels_of(outbox)
        mine = [c for c in channels if c in held]
        self.index.unsubscribe(outbox, mine)
        await self._release([c.registration for c in mine])

    async def _release(self, regs: list[Registration]) -> None:
        async with self._lock:
            gone = []
            for reg in regs:
                self._regs[reg] -= 1
                if self._regs[reg] <= 0:
                    del self._regs[reg]
                    gone.append(reg)
            if gone:
                await self.source.unsubscribe.remote(self.consumer_id, gone)

    # -- the data plane -----------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            started = time.monotonic()
            try:
                batch = await self.source.next_batch.remote(self.consumer_id, PULL_WAIT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._recover(exc)
                continue
            self.pull_s = time.monotonic() - started
            if batch is not None:
                self.last_batch_records = len(batch.records)
                self._deliver(batch)
            spent = time.monotonic() - started
            self._adapt(spent)
            # Let the next window fill: one pull per window bounds the Ray calls per second.
            await asyncio.sleep(max(0.0, self.window_s - spent))

    def _deliver(self, batch: object) -> None:
        t0 = time.monotonic()
        for status in batch.statuses:
            self.upstream = status
            self.index.broadcast(encode({"type": "status", "upstream": status}))
        self.window.add(batch.records)
        messages = self.window.drain(self.index.wanted())
        self.deliveries += self.index.publish(messages)
        self.batches += 1
        self.records += len(batch.records)
        self._last_cost = time.monotonic() - t0

    def _adapt(self, spent: float) -> None:
        cost = getattr(self, "_last_cost", 0.0)
        floor = min(self.max_window_s, max(self.base_window_s, len(self.index) / FRAME_BUDGET))
        if cost > self.window_s / 2 and self.window_s < self.max_window_s:
            self.window_s = min(self.max_window_s, self.window_s * 2)
        elif cost < self.window_s / 8 and self.window_s > floor:
            self.window_s = max(floor, self.window_s / 2)
        self.window_s = max(self.window_s, floor)

    async def _recover(self, exc: Exception) -> None:
        """The socket actor forgot us (restart, missed lease) or is away: register again."""
        if isinstance(_cause(exc), UnknownConsumerError):
            log.warning("hub %s: the socket actor forgot it; registering again", self.replica_id)
        else:
            log.warning("hub %s pull failed: %s; retrying", self.replica_id, exc)
            await asyncio.sleep(0.5)
            if self.resolve is not None:  # the actor may have been replaced: look it up again
                with contextlib.suppress(Exception):
                    self.source = self.resolve()
        try:
            await self.source.register.remote(self.consumer_id)
            async with self._lock:
                if self._regs:
                    await self.source.subscribe.remote(self.consumer_id, list(self._regs))
        except Exception as again:
            log.warning("hub %s re-register failed: %s", self.replica_id, again)
            await asyncio.sleep(1.0)

    async def _renew(self) -> None:
        """Keep the socket actor's lease and the session pool's leases: one call each."""
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                if self.pool is not None and self.sessions:
                    await self.pool.renew.remote(self.replica_id, list(self.sessions.values()))
            except Exception as exc:
                log.warning("session lease renewal failed: %s", exc)

    def stats(self) -> dict[str, object]:
        return {
            "replica": self.replica_id,
            "sockets": len(self.index),
            "registrations": len(self._regs),
            "window_ms": round(self.window_s * 1000, 1),
            "batches": self.batches,
            "records": self.records,
            "deliveries": self.deliveries,
            "pull_ms": round(self.pull_s * 1000, 1),
            "deliver_ms": round(getattr(self, "_last_cost", 0.0) * 1000, 1),
            "last_batch_records": self.last_batch_records,
            "outbox_max_bytes": max((o.pending_bytes for o in self.sessions), default=0),
            "outbox_high_water": max((o.high_water_bytes for o in self.sessions), default=0),
        }


_hub: Hub | None = None
_hub_lock = asyncio.Lock()


async def replica_hub(source: object | None = None, pool: object | None = None) -> Hub:
    """This process's hub, started on first use."""
    global _hub
    async with _hub_lock:
        if _hub is None:
            resolve = None
            if source is None:

                def resolve() -> object:
                    return ray.get_actor(SOCKET_ACTOR, namespace=NAMESPACE)

                source = resolve()
            hub = Hub(source, pool, resolve=resolve)
            await hub.start()
            _hub = hub
        return _hub
