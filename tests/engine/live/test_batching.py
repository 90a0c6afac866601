"""KeyedBatcher: one call in flight per key, the rest queued into the next, answers in order."""

from __future__ import annotations

import asyncio

import pytest

from engine.live.batching import KeyedBatcher


class Destination:
    """Records each call's items; answers after `gate` opens, doubling each item."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: Exception | None = None

    async def send(self, key: str, items: list[int]) -> list[int | BaseException]:
        self.calls.append((key, list(items)))
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [ValueError(f"odd {i}") if i % 2 else i * 2 for i in items]


async def test_calls_made_while_one_is_in_flight_go_together_in_order() -> None:
    dest = Destination()
    dest.gate.clear()
    batcher = KeyedBatcher(dest.send)
    first = batcher.submit("a", 0)
    await asyncio.sleep(0)  # the first call is out, waiting at the gate
    rest = [batcher.submit("a", i) for i in (2, 4, 6)]
    other = batcher.submit("b", 8)  # another key does not wait for "a"
    await asyncio.sleep(0)
    assert dest.calls == [("a", [0]), ("b", [8])]
    dest.gate.set()
    assert await first == 0 and [await f for f in rest] == [4, 8, 12] and await other == 16
    assert dest.calls == [("a", [0]), ("b", [8]), ("a", [2, 4, 6])]
    assert (batcher.calls, batcher.items) == (3, 5)


async def test_an_item_error_fails_only_that_item_and_a_call_error_fails_its_batch() -> None:
    dest = Destination()
    batcher = KeyedBatcher(dest.send)
    good, bad = batcher.submit("a", 2), batcher.submit("a", 3)
    assert await good == 4
    with pytest.raises(ValueError, match="odd 3"):
        await bad
    dest.fail_with = ConnectionError("actor gone")
    lost = [batcher.submit("a", i) for i in (4, 6)]
    for future in lost:
        with pytest.raises(ConnectionError):
            await future
    dest.fail_with = None
    assert await batcher.submit("a", 10) == 20  # the key works again after a failed call


async def test_batches_are_bounded() -> None:
    dest = Destination()
    dest.gate.clear()
    batcher = KeyedBatcher(dest.send, max_batch=2)
    futures = [batcher.submit("a", i * 2) for i in range(5)]
    await asyncio.sleep(0)
    dest.gate.set()
    assert [await f for f in futures] == [0, 4, 8, 12, 16]
    assert [items for _, items in dest.calls] == [[0, 2], [4, 6], [8]]
