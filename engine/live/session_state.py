"""One client's live-data session: the channels it holds and the limits they obey.

Pure, so the replica can apply a client's op at once (the tab never waits on an actor) while the
client's session actor keeps the durable copy the same rules produce (actors/session.py). It takes
parsed `Channel`s: the socket parses a client's names once (engine.live.channels.parse_channels),
and the same values travel to the hub, the session actor and the pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import SubscriptionLimitError
from engine.live.channels import Channel


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_channels: int = 60
    max_symbols: int = 20


class SessionState:
    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()
        self._channels: dict[Channel, None] = {}  # insertion-ordered set

    def subscribe(self, wanted: Iterable[Channel]) -> tuple[list[Channel], list[Channel]]:
        """Add channels; returns (added, all held). All or nothing: SubscriptionLimitError."""
        added = list(dict.fromkeys(c for c in wanted if c not in self._channels))
        total = len(self._channels) + len(added)
        if total > self.limits.max_channels:
            raise SubscriptionLimitError(
                f"at most {self.limits.max_channels} channels per connection ({total} asked)"
            )
        symbols = {c.symbol for c in self._channels} | {c.symbol for c in added}
        if len(symbols) > self.limits.max_symbols:
            raise SubscriptionLimitError(
                f"at most {self.limits.max_symbols} symbols per connection ({len(symbols)} asked)"
            )
        self._channels.update(dict.fromkeys(added))
        return added, self.channels()

    def unsubscribe(self, unwanted: Iterable[Channel]) -> tuple[list[Channel], list[Channel]]:
        gone = list(dict.fromkeys(c for c in unwanted if c in self._channels))
        for channel in gone:
            del self._channels[channel]
        return gone, self.channels()

    def replace(self, channels: Iterable[Channel]) -> None:
        """Hold exactly these channels: a copy catching up with its original."""
        self._channels = dict.fromkeys(channels)

    def channels(self) -> list[Channel]:
        return list(self._channels)
