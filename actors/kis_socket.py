"""KisSocketActor: the cluster's one KIS WebSocket, shared by every consumer (docs/kis-socket.md).

A thin Ray shell around engine.kis.feed.KisFeed. Named `kis-socket` in namespace `kisray`,
detached, restarted forever (`max_restarts=-1`); every caller gets it with
`get_or_create_kis_socket()`, so however many replicas, recorders or restarts there are, there is
one actor and therefore one socket. The production profile pins it to the node that offers the
custom resource `kis_collector`.

Consumers (all methods are async; `regs` are Registration or (tr_id, tr_key) pairs):
    await sock.register.remote(consumer_id)                     # pull mode
    await sock.register.remote(consumer_id, push_to=handle)     # push: handle.push.remote(batch)
    await sock.subscribe.remote(consumer_id, regs)              # SubscriptionLimitError past 41
    batch = await sock.next_batch.remote(consumer_id, wait_s)   # pull: Batch | None
    await sock.heartbeat.remote(consumer_id)                    # renew the lease
    await sock.unsubscribe.remote(consumer_id, regs) / unregister.remote(consumer_id)
Any of them raises UnknownConsumerError when the actor does not know the consumer (its lease ran
out, or the actor restarted): register again and re-subscribe what you still want.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import ray
from ray.exceptions import ActorDiedError, RayActorError

from actors.names import COLLECTOR_RESOURCE, COLLECTOR_SHARE, KIS_SOCKET, NAMESPACE
from engine.config import Settings, load_settings
from engine.errors import ConfigError
from engine.kis.connection import ConnectionConfig
from engine.kis.delivery import Batch
from engine.kis.feed import KisFeed
from engine.kis.registry import Registration, registration
from engine.live.gc_pauses import settle_heap
from engine.logs import configure_from_settings

log = logging.getLogger(__name__)

# The simulator accepts any credentials; these fixed ones keep sim mode free of configuration.
SIM_APP_KEY = "kisray-sim-app-key"
SIM_APP_SECRET = "kisray-sim-app-secret"
PUSH_WINDOW_S = 0.02  # records arriving within this window go out in one push
DEFAULT_MAX_IN_FLIGHT = 2

Profile = Literal["local", "production"]


def connection_config(settings: Settings) -> ConnectionConfig:
    key, secret = settings.kis_app_key, settings.kis_app_secret
    if key is None or secret is None:
        if settings.kis_env != "sim":
            missing = "KISRAY_KIS_APP_KEY" if key is None else "KISRAY_KIS_APP_SECRET"
            raise ConfigError(f"{missing}: required for kis_env={settings.kis_env}")
        app_key, app_secret = SIM_APP_KEY, SIM_APP_SECRET
    else:
        app_key, app_secret = key.get_secret_value(), secret.get_secret_value()
    return ConnectionConfig(
        ws_url=settings.ws_url,
        rest_url=settings.rest_url,
        app_key=app_key,
        app_secret=app_secret,
        backoff_base_s=settings.kis_backoff_base_s,
        backoff_max_s=max(settings.kis_backoff_max_s, settings.kis_backoff_base_s),
        silence_timeout_s=settings.kis_silence_timeout_s,
        in_use_backoff_s=settings.kis_in_use_backoff_s,
        subscribe_pacing_s=0.0 if settings.kis_env == "sim" else 0.05,
    )


def _registrations(regs: Iterable[Registration | tuple[str, str]]) -> list[Registration]:
    return [
        registration(r.tr_id, r.tr_key) if isinstance(r, Registration) else registration(*r)
        for r in regs
    ]


@dataclass
class _PushTarget:
    handle: Any  # a Ray actor handle with an async or sync `push(batch)` method
    max_in_flight: int


@ray.remote(num_cpus=0, max_restarts=-1)
class KisSocketActor:
    # Ray awaits an async actor constructor; plain Python (and so mypy) does not.
    async def __init__(self, overrides: dict[str, Any] | None = None) -> None:  # type: ignore[misc]
        # On a restart Ray runs this again with the same overrides: a fresh socket, no consumers;
        # live consumers get UnknownConsumerError on their next call and register again.
        settings = load_settings(**(overrides or {}))
        configure_from_settings(settings, console=False)
        self.settings = settings
        self.incarnation = uuid.uuid4().hex[:12]
        self._push_targets: dict[str, _PushTarget] = {}
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._pushes = self._push_failures = 0
        self.feed = KisFeed(
            connection_config(settings),
            max_registrations=settings.max_registrations,
            lease_s=settings.kis_consumer_lease_s,
            on_news=self._on_news,
        )
        self.feed.start()
        self._pusher = asyncio.create_task(self._push_loop(), name="kis-push")
        settle_heap()  # its pauses would hold every replica's next batch
        log.info(
            "kis-socket %s started (pid %d) for %s", self.incarnation, os.getpid(), settings.ws_url
        )

    # -- consumers ----------------------------------------------------------------------------

    async def register(
        self, consumer_id: str, push_to: Any = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ) -> dict[str, object]:
        """Idempotent. With `push_to`, batches are pushed to `push_to.push.remote(batch)`."""
        self.feed.register(consumer_id)
        if push_to is not None:
            self._push_targets[consumer_id] = _PushTarget(push_to, max(1, max_in_flight))
            self._wakeup.set()
        else:
            self._push_targets.pop(consumer_id, None)
        return {"incarnation": self.incarnation, "lease_s": self.feed.lease_s}

    async def heartbeat(self, consumer_id: str) -> str:
        """Renew the lease; returns the actor's incarnation (it changes on every restart)."""
        self.feed.touch(consumer_id)
        return self.incarnation

    async def subscribe(
        self, consumer_id: str, regs: Iterable[Registration | tuple[str, str]]
    ) -> frozenset[Registration]:
        """Everything the consumer now holds. All or nothing past the cap (SUBSCRIPTION_LIMIT)."""
        return await self.feed.subscribe(consumer_id, _registrations(regs))

    async def unsubscribe(
        self, consumer_id: str, regs: Iterable[Registration | tuple[str, str]]
    ) -> frozenset[Registration]:
        return await self.feed.unsubscribe(consumer_id, _registrations(regs))

    async def unregister(self, consumer_id: str) -> None:
        self._push_targets.pop(consumer_id, None)
        await self.feed.unregister(consumer_id)

    @ray.method(enable_task_events=False)
    async def next_batch(
        self,
        consumer_id: str,
        wait_s: float = 1.0,
        max_records: int | None = None,
        min_interval_s: float = 0.0,
    ) -> Batch | None:
        """Pull mode: the next micro-batch, waiting up to `wait_s` (None if nothing came), and
        no sooner than `min_interval_s` after the consumer's previous one."""
        return await self.feed.next_batch(
            consumer_id, min(wait_s, 30.0), max_records, min(min_interval_s, 1.0)
        )

    # -- health -------------------------------------------------------------------------------

    async def stats(self) -> dict[str, object]:
        stats = self.feed.stats().as_dict()
        stats.update(
            env=self.settings.kis_env,
            rest_url=self.settings.rest_url,
            incarnation=self.incarnation,
            lease_s=self.feed.lease_s,
            push_consumers=len(self._push_targets),
            pushes=self._pushes,
            push_failures=self._push_failures,
        )
        return stats

    def pid(self) -> int:
        return os.getpid()

    async def wait_connected(self, wait_s: float = 10.0) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self.feed.connection.wait_connected()
        return self.feed.connection.connected

    # -- push delivery ------------------------------------------------------------------------

    def _on_news(self, consumer_ids: set[str]) -> None:
        if self._push_targets and not consumer_ids.isdisjoint(self._push_targets):
            self._wakeup.set()

    async def _push_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(PUSH_WINDOW_S)  # let the micro-batch fill
            for consumer_id, target in list(self._push_targets.items()):
                box = self.feed.router.mailboxes.get(consumer_id)
                if box is None:
                    self._push_targets.pop(consumer_id, None)
                    continue
                if box.in_flight >= target.max_in_flight or not box.has_news():
                    continue  # bounded in flight: the mailbox keeps (and bounds) the rest
                batch = box.take()
                if batch is not None:
                    box.in_flight += 1
                    task = asyncio.create_task(self._push(consumer_id, target, batch))
                    self._in_flight.add(task)  # keep a reference until it finishes
                    task.add_done_callback(self._in_flight.discard)

    async def _push(self, consumer_id: str, target: _PushTarget, batch: Batch) -> None:
        try:
            await target.handle.push.remote(batch)
        except ActorDiedError:
            self._push_failures += 1
            await self.unregister_dead(consumer_id)
        except RayActorError as exc:  # unavailable for now (restarting): the lease decides
            self._push_failures += 1
            log.warning("push to %s failed: %s", consumer_id, exc)
        except Exception:
            self._push_failures += 1
            log.exception("consumer %s raised in push()", consumer_id)
        else:
            self._pushes += 1
            box = self.feed.router.mailboxes.get(consumer_id)
            if box is not None:
                box.renew()  # an acknowledged push proves the consumer is alive
        finally:
            box = self.feed.router.mailboxes.get(consumer_id)
            if box is not None:
                box.in_flight -= 1
                if box.has_news():
                    self._wakeup.set()

    async def unregister_dead(self, consumer_id: str) -> None:
        if self._push_targets.get(consumer_id) is not None:
            log.warning("consumer %s died; releasing its registrations", consumer_id)
        self._push_targets.pop(consumer_id, None)
        await self.feed.unregister(consumer_id, reason="died")


def get_or_create_kis_socket(profile: Profile = "local", **overrides: Any):
    """The cluster's one `kis-socket` actor handle, created on first use.

    `overrides` are Settings fields (e.g. kis_ws_url for a test simulator). They only apply
    when this call creates the actor: an existing actor keeps its settings. Keep credentials in
    the environment (KISRAY_KIS_APP_KEY/SECRET), not here: constructor arguments are stored by
    Ray in the clear.
    """
    options: dict[str, Any] = {
        "name": KIS_SOCKET,
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "num_cpus": 0,
    }
    if profile == "production":
        options["resources"] = {COLLECTOR_RESOURCE: COLLECTOR_SHARE}
    # mypy ignores class decorators: ray.remote made KisSocketActor an ActorClass.
    return KisSocketActor.options(**options).remote(overrides or None)  # type: ignore[attr-defined]
