"""A stand-in KIS socket actor for the recorder tests: one KisFeed (engine/kis/feed.py) in a Ray
actor, exposing the consumer protocol the recorder uses (register, subscribe, unsubscribe,
next_batch, unregister) against a real simulator."""

from __future__ import annotations

import ray

from engine.kis.connection import ConnectionConfig
from engine.kis.feed import KisFeed


class FeedShell:
    async def __init__(self, ws_url: str, rest_url: str) -> None:
        self.feed = KisFeed(ConnectionConfig(ws_url, rest_url, "app-key", "secret"))
        self.feed.start()

    def register(self, consumer_id: str) -> None:
        self.feed.register(consumer_id)

    async def subscribe(self, consumer_id: str, regs: list) -> None:
        await self.feed.subscribe(consumer_id, regs)

    async def unsubscribe(self, consumer_id: str, regs: list) -> None:
        await self.feed.unsubscribe(consumer_id, regs)

    async def unregister(self, consumer_id: str) -> None:
        await self.feed.unregister(consumer_id)

    async def next_batch(self, consumer_id: str, wait_s: float = 1.0):
        return await self.feed.next_batch(consumer_id, wait_s)

    def stats(self) -> dict:
        return self.feed.stats().as_dict()


def feed_actor(name: str, ws_url: str, rest_url: str):
    import sys

    # The workers cannot import the tests package: ship this module's code by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return (
        ray.remote(num_cpus=0)(FeedShell)
        .options(name=name, namespace="kisray")
        .remote(ws_url, rest_url)
    )
