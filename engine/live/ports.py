"""What the live hub (engine.live.hub) needs from the cluster, as three small protocols, and the
errors it reacts to. The Ray adapters in api/hub.py implement them over actor handles and
translate Ray's exceptions into these; tests implement them in-process.

The errors are not KisrayErrors: they never reach a client as such (the hub rides them out or
they surface as an internal error, as Ray's own did).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from engine.domain.bars import LiveBar, MinuteBar
from engine.kis.delivery import Batch
from engine.kis.registry import Registration
from engine.live.channels import Channel


class UpstreamLostError(Exception):
    """The KIS socket actor did not answer: dead, replaced, or restarting."""


class UpstreamRestartingError(UpstreamLostError):
    """The KIS socket actor is restarting: the same one answers again soon."""


class PoolLostError(Exception):
    """The session pool did not answer: dead, or restarting."""


class PoolRestartingError(PoolLostError):
    """The session pool is restarting: the same one answers again soon."""


class Upstream(Protocol):
    """The KIS socket actor, as one consumer sees it. Raises UpstreamLostError when it does not
    answer, engine.errors.UnknownConsumerError when it forgot the consumer."""

    async def register(self, consumer_id: str) -> None: ...

    async def unregister(self, consumer_id: str) -> None: ...

    async def subscribe(self, consumer_id: str, regs: list[Registration]) -> None:
        """Raises SubscriptionLimitError past the socket's cap (all or nothing)."""

    async def unsubscribe(self, consumer_id: str, regs: list[Registration]) -> None: ...

    def pull(
        self, consumer_id: str, wait_s: float, min_interval_s: float
    ) -> Awaitable[Batch | None]:
        """Send the next pull now (not when awaited): its answer comes no sooner than
        `min_interval_s` after the previous batch, None when nothing came within `wait_s`."""
        ...

    async def relocate(self) -> None:
        """Look the socket actor up again: it may have been replaced."""


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """A replica asks the pool for a session: the parked one to `resume`, else a fresh one
    (under `session_id` when the tab already has its id)."""

    client_id: str
    replica_id: str
    resume: str | None = None
    session_id: str | None = None


class HasSessionId(Protocol):
    @property
    def session_id(self) -> str: ...


LeaseT_co = TypeVar("LeaseT_co", bound=HasSessionId, covariant=True)


class SessionPool(Protocol[LeaseT_co]):
    """The session pool, leasing session actors to replicas. Raises PoolLostError when it does
    not answer."""

    async def acquire(self, request: LeaseRequest) -> LeaseT_co:
        """A session as `request` asks."""
        ...

    async def adopt(self, session_id: str, replica_id: str, channels: list[Channel]) -> LeaseT_co:
        """A new session actor under a live session's id, holding `channels`."""
        ...

    async def release(
        self, session_id: str, park: bool, channels: tuple[Channel, ...] | None, replica_id: str
    ) -> None: ...

    async def renew(self, replica_id: str, session_ids: list[str]) -> list[str]:
        """Renew the replica's leases; returns the ones the pool does not hold for it."""
        ...

    async def relocate(self) -> None:
        """Find the pool again, or create it: the one known was killed for good."""


class BarSource(Protocol):
    """Candle channels' bars: the recorder's forming 1-minute bars and the candle service's
    roll-ups to coarser intervals."""

    async def locate(self) -> None:
        """Find the recorder; raises (ValueError) while there is none."""

    async def forming_bars(self) -> dict[str, MinuteBar]:
        """Every symbol's forming bar, as the recorder has it now."""
        ...

    async def forming_updates(self, after: int, wait_s: float) -> tuple[int, dict[str, MinuteBar]]:
        """Long-poll: (seq, bars published since `after`), waiting up to `wait_s`."""
        ...

    async def live_bars(
        self, symbol: str, intervals: list[str], bar: MinuteBar | None
    ) -> dict[str, LiveBar]:
        """`bar` (the candle service's own when None) rolled up into each interval's bucket."""
        ...
