"""In-process fan-out of rendered window messages to many client sockets.

Each client has an Outbox: a bounded queue its socket writer drains. Trades queue in order and are
never dropped silently; a book or forming candle still waiting in the outbox is replaced by the
newer one (latest wins). An outbox past its byte bound is marked overflowed and emptied, so a client
that cannot keep up costs a bounded amount of memory and is disconnected with SLOW_CONSUMER instead
of slowing anyone else: publishing only appends, it never waits on a socket.
Pure asyncio, no Ray.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from engine.live.channels import TRADE, Channel

DEFAULT_MAX_BYTES = 4 * 1024 * 1024


class Outbox:
    """What is waiting to be written to one client socket."""

    def __init__(self, client_id: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.client_id = client_id
        self.max_bytes = max_bytes
        self._queue: deque[str] = deque()
        self._latest: dict[Channel, str] = {}  # coalesced channels, latest wins
        self.pending_bytes = 0
        self.high_water_bytes = 0
        self.overflowed = False
        self.sent = 0
        self.coalesced = 0
        self._ready = asyncio.Event()
        self.overflow = asyncio.Event()  # set once; the socket owner disconnects the client

    def offer(self, channel: Channel | None, text: str) -> None:
        """Queue a message; channel None (status, pong, error) always queues in order."""
        if self.overflowed:
            return
        if channel is None or channel.kind == TRADE:
            self._queue.append(text)
            self.pending_bytes += len(text)
        else:
            old = self._latest.get(channel)
            if old is not None:
                self.pending_bytes -= len(old)
                self.coalesced += 1
            self._latest[channel] = text
            self.pending_bytes += len(text)
        self.high_water_bytes = max(self.high_water_bytes, self.pending_bytes)
        if self.pending_bytes > self.max_bytes:
            self.overflowed = True
            self._queue.clear()
            self._latest.clear()
            self.pending_bytes = 0
            self.overflow.set()
        self._ready.set()

    def take(self) -> list[str]:
        """Everything waiting, oldest first (coalesced snapshots after the queued messages)."""
        out = list(self._queue)
        out.extend(self._latest.values())
        self._queue.clear()
        self._latest.clear()
        self.pending_bytes = 0
        self._ready.clear()
        self.sent += len(out)
        return out

    async def wait(self, max_wait_s: float | None = None) -> list[str]:
        """Wait for something to write (or the timeout) and take it."""
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), max_wait_s)
            except TimeoutError:
                return []
        return self.take()


class FanoutIndex:
    """Who wants which channel, in this process; publishing is one dict lookup per channel."""

    def __init__(self) -> None:
        self._by_channel: dict[Channel, set[Outbox]] = {}
        self._by_outbox: dict[Outbox, set[Channel]] = {}

    def __len__(self) -> int:
        return len(self._by_outbox)

    def add(self, outbox: Outbox) -> None:
        self._by_outbox.setdefault(outbox, set())

    def channels_of(self, outbox: Outbox) -> frozenset[Channel]:
        return frozenset(self._by_outbox.get(outbox, ()))

    def subscribe(self, outbox: Outbox, channels: Iterable[Channel]) -> None:
        mine = self._by_outbox.setdefault(outbox, set())
        for channel in channels:
            self._by_channel.setdefault(channel, set()).add(outbox)
            mine.add(channel)

    def unsubscribe(self, outbox: Outbox, channels: Iterable[Channel]) -> None:
        mine = self._by_outbox.get(outbox, set())
        for channel in channels:
            mine.discard(channel)
            holders = self._by_channel.get(channel)
            if holders is not None:
                holders.discard(outbox)
                if not holders:
                    del self._by_channel[channel]

    def remove(self, outbox: Outbox) -> None:
        self.unsubscribe(outbox, list(self._by_outbox.get(outbox, ())))
        self._by_outbox.pop(outbox, None)

    def wanted(self) -> frozenset[Channel]:
        return frozenset(self._by_channel)

    def publish(self, messages: dict[Channel, str]) -> int:
        """Hand each channel's message to its subscribers; returns the number of deliveries."""
        deliveries = 0
        for channel, text in messages.items():
            for outbox in self._by_channel.get(channel, ()):
                outbox.offer(channel, text)
                deliveries += 1
        return deliveries

    def broadcast(self, text: str) -> None:
        for outbox in self._by_outbox:
            outbox.offer(None, text)
