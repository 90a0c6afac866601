"""Reference-counted KIS registrations shared by many consumers (docs/kis-protocol.md §5, §6).

KIS allows 41 (tr_id, tr_key) registrations per app key. Consumers (browser sessions, recorders)
ask for the pairs they want; the first interest in a pair means "subscribe upstream", the last
release means "unsubscribe upstream". A request that would take the upstream count past the cap
is refused whole with SubscriptionLimitError and changes nothing.

Pure bookkeeping: no I/O, no Ray. The socket owner turns the returned keys into wire messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.domain.symbols import is_symbol
from engine.errors import BadRequestError, SubscriptionLimitError
from engine.kis import tr


@dataclass(frozen=True, slots=True, order=True)
class Registration:
    """One upstream registration: a TR id and its key (a symbol, or an HTS id for notices)."""

    tr_id: str
    tr_key: str

    def __str__(self) -> str:
        return f"{self.tr_id}:{self.tr_key}"


def registration(tr_id: str, tr_key: str) -> Registration:
    """Validate and build a Registration; BadRequestError for what KIS would refuse anyway."""
    if tr_id not in tr.SUPPORTED_TRS:
        raise BadRequestError(f"unsupported TR id {tr_id!r}")
    if tr_id in tr.NOTICE_TRS:
        ok = 1 <= len(tr_key) <= 16 and not any(c.isspace() for c in tr_key)
    else:
        ok = is_symbol(tr_key)
    if not ok:
        raise BadRequestError(f"invalid key {tr_key!r} for {tr_id}")
    return Registration(tr_id, tr_key)


class RegistrationTable:
    """Which consumer wants which registrations; upstream order is first-interest order."""

    def __init__(self, cap: int = 41) -> None:
        self.cap = cap
        # Registration → its consumers. A dict keeps first-interest order for resubscription.
        self._holders: dict[Registration, set[str]] = {}
        self._by_consumer: dict[str, set[Registration]] = {}

    def __len__(self) -> int:
        return len(self._holders)

    def __contains__(self, reg: object) -> bool:
        return reg in self._holders

    def upstream(self) -> list[Registration]:
        """Every registration someone holds, in the order it was first wanted."""
        return list(self._holders)

    def consumers(self) -> list[str]:
        return list(self._by_consumer)

    def held_by(self, consumer_id: str) -> frozenset[Registration]:
        return frozenset(self._by_consumer.get(consumer_id, ()))

    def holders(self, reg: Registration) -> frozenset[str]:
        return frozenset(self._holders.get(reg, ()))

    def add_consumer(self, consumer_id: str) -> None:
        self._by_consumer.setdefault(consumer_id, set())

    def acquire(self, consumer_id: str, regs: Iterable[Registration]) -> list[Registration]:
        """Add interest; returns the registrations that are new upstream (to subscribe).

        All or nothing: if the new ones would exceed the cap, nothing changes.
        """
        wanted = list(dict.fromkeys(regs))
        new = [r for r in wanted if r not in self._holders]
        if len(self._holders) + len(new) > self.cap:
            raise SubscriptionLimitError(
                f"{len(new)} new registration(s) would exceed the limit of {self.cap} "
                f"({len(self._holders)} in use)"
            )
        mine = self._by_consumer.setdefault(consumer_id, set())
        for reg in wanted:
            self._holders.setdefault(reg, set()).add(consumer_id)
            mine.add(reg)
        return new

    def release(self, consumer_id: str, regs: Iterable[Registration]) -> list[Registration]:
        """Drop interest; returns the registrations nobody holds any more (to unsubscribe)."""
        mine = self._by_consumer.get(consumer_id)
        if not mine:
            return []
        gone = []
        for reg in dict.fromkeys(regs):
            if reg not in mine:
                continue
            mine.discard(reg)
            holders = self._holders[reg]
            holders.discard(consumer_id)
            if not holders:
                del self._holders[reg]
                gone.append(reg)
        return gone

    def remove_consumer(self, consumer_id: str) -> list[Registration]:
        """Forget a consumer and release everything it held."""
        mine = self._by_consumer.get(consumer_id)
        if mine is None:
            return []
        order = [r for r in self._holders if r in mine]  # release in upstream order
        gone = self.release(consumer_id, order)
        del self._by_consumer[consumer_id]
        return gone
