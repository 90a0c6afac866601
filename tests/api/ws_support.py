"""What the /ws tests and the fan-out bench share: the upstream behind the `kis-socket` name.

Until the KIS socket actor (issue #5) is in the tree, FeedHost stands in for it: the same KisFeed
(real connection, real simulator) behind the same consumer methods, as a named Ray actor.
"""

from __future__ import annotations

import contextlib

import ray

from engine.kis.connection import ConnectionConfig
from engine.kis.feed import KisFeed
from engine.kis.registry import Registration

SOCKET_ACTOR = "kis-socket"
NAMESPACE = "kisray"


@ray.remote(num_cpus=0)
class FeedHost:
    def __init__(self, ws_url: str, rest_url: str, app_key: str = "kisray-ws") -> None:
        self.config = ConnectionConfig(ws_url, rest_url, app_key, "secret")
        self.feed: KisFeed | None = None

    async def start(self) -> None:
        if self.feed is None:
            self.feed = KisFeed(self.config)
            self.feed.start()

    async def register(self, consumer_id: str) -> None:
        assert self.feed is not None
        self.feed.register(consumer_id)

    async def subscribe(self, consumer_id: str, regs: list[Registration]) -> frozenset:
        assert self.feed is not None
        return await self.feed.subscribe(consumer_id, regs)

    async def unsubscribe(self, consumer_id: str, regs: list[Registration]) -> frozenset:
        assert self.feed is not None
        return await self.feed.unsubscribe(consumer_id, regs)

    async def unregister(self, consumer_id: str) -> None:
        assert self.feed is not None
        await self.feed.unregister(consumer_id)

    async def next_batch(self, consumer_id: str, wait_s: float = 1.0):
        assert self.feed is not None
        return await self.feed.next_batch(consumer_id, wait_s)

    async def stats(self) -> dict:
        assert self.feed is not None
        return self.feed.stats().as_dict()


def start_socket_actor(ws_url: str, rest_url: str):
    """The `kis-socket` actor against this simulator (a fresh one; an old one is replaced)."""
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(SOCKET_ACTOR, namespace=NAMESPACE))
    actor = FeedHost.options(name=SOCKET_ACTOR, namespace=NAMESPACE).remote(ws_url, rest_url)
    ray.get(actor.start.remote())
    return actor
