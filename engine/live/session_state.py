"""One client's live-data session: the channels it holds and the limits they obey.

Pure, so the replica can apply a client's op at once (the tab never waits on an actor) while the
client's session actor keeps the durable copy the same rules produce (actors/session.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import SubscriptionLimitError
from engine.live.channels import Channel, parse_channels


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_channels: int = 60
    max_symbols: int = 20


class SessionState:
    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()
        self._channels: dict[Channel, None] = {}  # insertion-ordered set

    def subscribe(self, names: object) -> tuple[list[str], list[str]]:
        """Add channels; returns (added, all held). All or nothing; typed errors for bad input."""
        wanted = parse_channels(names)
        added = [c for c in wanted if c not in self._channels]
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
        return [str(c) for c in added], self.channels()

    def unsubscribe(self, names: object) -> tuple[list[str], list[str]]:
        gone = [c for c in parse_channels(names) if c in self._channels]
        for channel in gone:
            del self._channels[channel]
        return [str(c) for c in gone], self.channels()

    def replace(self, names: list[str]) -> None:
        """Hold exactly these (already valid) channels: a copy catching up with its original."""
        self._channels = dict.fromkeys(parse_channels(names)) if names else {}

    def channels(self) -> list[str]:
        return [str(c) for c in self._channels]
