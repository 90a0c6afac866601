"""Many small calls to one destination as few large ones: one call in flight per key, and
everything submitted meanwhile goes in the next.

A connect storm of 1,000 tabs made three actor calls per tab from one replica (lease, replace,
subscribe), and Ray's submit path was 16 % of the replica's profile (docs/fanout.md, "Batched
control plane"). Batched, the calls per second are bounded by the round trip, not by the tabs,
and a lone call still goes at once.
Pure asyncio, no Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741  (an item)
R = TypeVar("R")

MAX_BATCH = 500  # bounds one call's message and the time its answer takes

# Sends one batch for a key; answers each item in order, an exception standing for its item.
Send = Callable[[K, list[I]], Awaitable[list[R | BaseException]]]


class KeyedBatcher(Generic[K, I, R]):
    def __init__(self, send: Send[K, I, R], max_batch: int = MAX_BATCH) -> None:
        self._send = send
        self.max_batch = max_batch
        self._queued: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._flushing: dict[K, asyncio.Task[None]] = {}
        self.calls = 0  # batches sent
        self.items = 0  # items they carried

    def submit(self, key: K, item: I) -> asyncio.Future[R]:
        """Queue `item` for `key`; the future gets its answer. Items of one key are sent in the
        order submitted, and a batch only after the one before it was answered."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, []).append((item, future))
        if key not in self._flushing:
            self._flushing[key] = asyncio.create_task(self._flush(key), name="batcher-flush")
        return future

    async def _flush(self, key: K) -> None:
        try:
            while queue := self._queued.get(key):
                batch = queue[: self.max_batch]
                del queue[: self.max_batch]
                await self._send_one(key, batch)
        finally:
            self._flushing.pop(key, None)
            if not self._queued.get(key):
                self._queued.pop(key, None)

    async def _send_one(self, key: K, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        self.calls += 1
        self.items += len(batch)
        try:
            answers = await self._send(key, [item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the whole call failed: every item in it did
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its caller gave up waiting
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)
