"""KisFeed: the one KIS socket plus its consumers — registrations, routing, leases, stats.

Composes RegistrationTable (who wants what), KisConnection (the socket) and Router (mailboxes).
Pure asyncio, no Ray: the KisSocketActor is a thin shell around one KisFeed, and tests drive it
directly against the simulator.

Consumer protocol:
    feed.register("rec-1")                      # idempotent; starts the lease
    feed.subscribe("rec-1", [Registration(TRADE, "005930")])   # SubscriptionLimitError past cap
    batch = await feed.next_batch("rec-1", 1.0) # pull; or the owner pushes feed.take("rec-1")
    feed.touch("rec-1")                         # heartbeat; UnknownConsumerError if forgotten
    feed.unregister("rec-1")
A consumer that stops calling is released `lease_s` (+ one sweep period) after its last call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.errors import UnknownConsumerError
from engine.kis.codec import RealtimeFrame
from engine.kis.connection import ConnectionConfig, ConnectionStats, KisConnection, UpstreamStatus
from engine.kis.delivery import Batch, Mailbox, Router
from engine.kis.registry import Registration, RegistrationTable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FeedStats:
    """For /health and /metrics."""

    connection: ConnectionStats
    registrations: tuple[str, ...]  # "TR:key", upstream order
    max_registrations: int
    consumers: int
    routed_records: int
    unrouted_records: int
    dropped_records: int  # lost to full mailboxes, all consumers
    consumers_expired: int

    def as_dict(self) -> dict[str, object]:
        conn = self.connection
        return {
            "state": conn.state,
            "ws_url": conn.ws_url,
            "registrations": len(self.registrations),
            "registration_keys": list(self.registrations),
            "max_registrations": self.max_registrations,
            "live_registrations": conn.live_registrations,
            "consumers": self.consumers,
            "connects": conn.connects,
            "reconnects": conn.reconnects,
            "connect_failures": conn.connect_failures,
            "watchdog_timeouts": conn.watchdog_timeouts,
            "in_use_rejections": conn.in_use_rejections,
            "approval_keys_issued": conn.approval_keys_issued,
            "frames": conn.frames,
            "records": conn.records,
            "decode_errors": conn.decode_errors,
            "pings": conn.pings,
            "refused": dict(conn.refused),
            "last_message_age_s": conn.last_message_age_s,
            "last_error": conn.last_error,
            "routed_records": self.routed_records,
            "unrouted_records": self.unrouted_records,
            "dropped_records": self.dropped_records,
            "consumers_expired": self.consumers_expired,
        }


class KisFeed:
    def __init__(
        self,
        config: ConnectionConfig,
        *,
        max_registrations: int = 41,
        lease_s: float = 10.0,
        max_pending: int = 20_000,
        on_news: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.table = RegistrationTable(max_registrations)
        self.router = Router(self.table)
        self.lease_s = lease_s
        self.max_pending = max_pending
        self._on_news = on_news or (lambda _ids: None)
        self.connection = KisConnection(
            config, self.table.upstream, self._on_frame, self._on_status
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._routed = 0
        self._last_batch_at: dict[str, float] = {}  # consumer → when its last batch left
        self._expired = 0
        self._status: UpstreamStatus | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.connection.start()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="kis-lease-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.connection.stop()

    @property
    def sweep_interval_s(self) -> float:
        return min(1.0, self.lease_s / 4)

    # -- consumers ----------------------------------------------------------------------------

    def register(self, consumer_id: str) -> None:
        box = self.router.mailboxes.get(consumer_id)
        if box is None:
            box = Mailbox(consumer_id, max_pending=self.max_pending, lease_s=self.lease_s)
            self.router.mailboxes[consumer_id] = box
            self.table.add_consumer(consumer_id)
            if self._status is not None:
                box.put_status(self._status.value)  # a newcomer learns the current state
            log.info("consumer %s registered", consumer_id)
        box.renew()

    def is_registered(self, consumer_id: str) -> bool:
        return consumer_id in self.router.mailboxes

    def touch(self, consumer_id: str) -> Mailbox:
        """Renew the lease (any call from the consumer, or a push it acknowledged)."""
        box = self.router.mailboxes.get(consumer_id)
        if box is None:
            raise UnknownConsumerError(f"unknown consumer {consumer_id!r}; register again")
        box.renew()
        return box

    async def subscribe(
        self, consumer_id: str, regs: Iterable[Registration]
    ) -> frozenset[Registration]:
        """Add registrations for a consumer; all or nothing (SubscriptionLimitError)."""
        self.touch(consumer_id)
        new = self.table.acquire(consumer_id, regs)
        if new:
            log.info("subscribing %s for %s", ", ".join(map(str, new)), consumer_id)
            await self.connection.subscribe(new)
        return self.table.held_by(consumer_id)

    async def unsubscribe(
        self, consumer_id: str, regs: Iterable[Registration]
    ) -> frozenset[Registration]:
        self.touch(consumer_id)
        gone = self.table.release(consumer_id, regs)
        if gone:
            await self.connection.unsubscribe(gone)
        return self.table.held_by(consumer_id)

    async def unregister(self, consumer_id: str, *, reason: str = "unregistered") -> None:
        """Forget a consumer and release everything it held (idempotent)."""
        self._last_batch_at.pop(consumer_id, None)
        if self.router.mailboxes.pop(consumer_id, None) is None:
            return
        gone = self.table.remove_consumer(consumer_id)
        log.info(
            "consumer %s %s; releasing %d upstream registration(s)", consumer_id, reason, len(gone)
        )
        if gone:
            await self.connection.unsubscribe(gone)

    def take(self, consumer_id: str, max_records: int | None = None) -> Batch | None:
        """The consumer's next micro-batch, for a push by the owner (does not renew the lease)."""
        box = self.router.mailboxes.get(consumer_id)
        return None if box is None else box.take(max_records)

    async def next_batch(
        self,
        consumer_id: str,
        wait_s: float = 1.0,
        max_records: int | None = None,
        min_interval_s: float = 0.0,
    ) -> Batch | None:
        """Pull: wait up to `wait_s` for news; None if nothing came. Renews the lease.

        With `min_interval_s` a batch is returned no sooner than that after this consumer's
        previous one, so a caller can keep its next pull outstanding at once (no sleep and round
        trip between windows) and still get at most one batch per window.
        """
        box = self.touch(consumer_id)
        if min_interval_s > 0:
            delay = self._last_batch_at.get(consumer_id, 0.0) + min_interval_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if not box.has_news():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await box.ready.wait()
        if self.router.mailboxes.get(consumer_id) is not box:
            raise UnknownConsumerError(f"consumer {consumer_id!r} was released while waiting")
        box.renew()
        self._last_batch_at[consumer_id] = time.monotonic()
        return box.take(max_records)

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> FeedStats:
        return FeedStats(
            connection=self.connection.stats(),
            registrations=tuple(str(r) for r in self.table.upstream()),
            max_registrations=self.table.cap,
            consumers=len(self.router.mailboxes),
            routed_records=self._routed,
            unrouted_records=self.router.unrouted,
            dropped_records=sum(b.dropped_total for b in self.router.mailboxes.values()),
            consumers_expired=self._expired,
        )

    # -- internals ----------------------------------------------------------------------------

    def _on_frame(self, frame: RealtimeFrame) -> None:
        touched = self.router.route(frame)
        if touched:
            self._routed += len(frame.records)
            self._on_news(touched)

    def _on_status(self, status: UpstreamStatus) -> None:
        self._status = status
        self.router.broadcast_status(status.value)
        self._on_news(set(self.router.mailboxes))

    async def sweep(self) -> list[str]:
        """Release every consumer whose lease ran out; returns their ids."""
        expired = self.router.expired()
        for consumer_id in expired:
            self._expired += 1
            await self.unregister(consumer_id, reason=f"missed its {self.lease_s:g} s lease")
        return expired

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:  # the sweeper must outlive any one bad release
                log.exception("lease sweep failed")
