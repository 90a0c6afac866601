"""Delivery of decoded KIS records to consumers: per-consumer mailboxes, leases, micro-batches.

The socket owner routes every record of a frame to the consumers holding its registration
(trades and books by symbol, notices by HTS id); each consumer's records queue in its Mailbox
until the next micro-batch is taken, by a push (the owner calls the consumer) or a pull (the
consumer asks). A mailbox is bounded: past `max_pending` records the oldest are dropped and
counted, so one slow consumer can neither stall the socket reader nor grow memory without end.

Liveness is a lease: every call from a consumer, and every push it acknowledges, renews it; a
consumer whose lease ran out is released with all its registrations. Pure Python, no Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.kis.codec import RealtimeFrame
from engine.kis.records import ExecutionNotice, Record
from engine.kis.registry import Registration, RegistrationTable

_MAX_STATUSES = 8


@dataclass(frozen=True, slots=True)
class Batch:
    """One micro-batch for one consumer.

    seq counts from 1 per consumer and registration; pushes may run out of order on an async
    consumer, so order by seq. `statuses` lists the upstream changes since the previous batch,
    oldest first ("reconnecting", "connected"): a "reconnecting" means records may be missing
    around it. `dropped` counts records lost to a full mailbox since the previous batch.
    """

    consumer_id: str
    seq: int
    records: tuple[Record, ...]
    statuses: tuple[str, ...] = ()
    dropped: int = 0


class Mailbox:
    """What is waiting for one consumer, its lease, and its in-flight pushes."""

    def __init__(
        self,
        consumer_id: str,
        *,
        max_pending: int,
        lease_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer_id = consumer_id
        self.max_pending = max_pending
        self.lease_s = lease_s
        self._clock = clock
        self._records: deque[Record] = deque()
        self._statuses: list[str] = []
        self._dropped = 0
        self.dropped_total = 0
        self.delivered_records = 0
        self.batches = 0
        self.in_flight = 0
        self.expires_at = clock() + lease_s
        self.ready = asyncio.Event()  # set while something is waiting (pull consumers wait on it)

    def renew(self) -> None:
        self.expires_at = self._clock() + self.lease_s

    def expired(self, now: float | None = None) -> bool:
        return (self._clock() if now is None else now) >= self.expires_at

    @property
    def pending(self) -> int:
        return len(self._records)

    def has_news(self) -> bool:
        return bool(self._records) or bool(self._statuses)

    def put(self, records: Iterable[Record]) -> None:
        self._records.extend(records)
        overflow = len(self._records) - self.max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._records.popleft()  # the oldest are the least useful to a live chart
            self._dropped += overflow
            self.dropped_total += overflow
        self.ready.set()

    def put_status(self, status: str) -> None:
        if not self._statuses or self._statuses[-1] != status:
            self._statuses.append(status)
            del self._statuses[:-_MAX_STATUSES]  # a flapping link must not grow this
        self.ready.set()

    def take(self, max_records: int | None = None) -> Batch | None:
        """Everything waiting (or the oldest `max_records`) as one batch, or None."""
        if not self.has_news():
            return None
        if max_records is None or max_records >= len(self._records):
            records = tuple(self._records)
            self._records.clear()
        else:
            records = tuple(self._records.popleft() for _ in range(max_records))
        self.batches += 1
        batch = Batch(self.consumer_id, self.batches, records, tuple(self._statuses), self._dropped)
        self.delivered_records += len(records)
        self._statuses, self._dropped = [], 0
        if not self.has_news():
            self.ready.clear()
        return batch


class Router:
    """Routes each frame's records to the mailboxes of the consumers that registered for them."""

    def __init__(self, table: RegistrationTable) -> None:
        self.table = table
        self.mailboxes: dict[str, Mailbox] = {}
        self.unrouted = 0  # records nobody holds (e.g. just after a release)

    def route(self, frame: RealtimeFrame) -> set[str]:
        """Deliver a frame; returns the ids of the consumers that got something."""
        # Group by the key string first: building a Registration per record costs more than
        # decoding it, and a frame's records mostly share one symbol.
        groups: dict[str, list[Record]] = {}
        notices = frame.records and isinstance(frame.records[0], ExecutionNotice)
        for record in frame.records:
            key = record.customer_id if notices else record.symbol  # type: ignore[union-attr]
            group = groups.get(key)
            if group is None:
                groups[key] = [record]
            else:
                group.append(record)
        touched: set[str] = set()
        for key, records in groups.items():
            holders = self.table.holders(Registration(frame.tr_id, key))
            if not holders:
                self.unrouted += len(records)
                continue
            for consumer_id in holders:
                box = self.mailboxes.get(consumer_id)
                if box is not None:
                    box.put(records)
                    touched.add(consumer_id)
        return touched

    def broadcast_status(self, status: str) -> None:
        for box in self.mailboxes.values():
            box.put_status(status)

    def expired(self) -> list[str]:
        return [cid for cid, box in self.mailboxes.items() if box.expired()]
