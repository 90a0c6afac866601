"""Reference-counted registrations and the 41 cap (engine.kis.registry), no I/O."""

from __future__ import annotations

import pytest

from engine.errors import BadRequestError, SubscriptionLimitError
from engine.kis import BOOK, NOTICE, TRADE
from engine.kis.registry import Registration, RegistrationTable, registration

A = Registration(TRADE, "005930")
B = Registration(TRADE, "000660")
C = Registration(BOOK, "005930")


def codes(n: int, start: int = 100000) -> list[Registration]:
    return [Registration(TRADE, f"{start + i:06d}") for i in range(n)]


def test_first_interest_subscribes_and_last_release_unsubscribes() -> None:
    table = RegistrationTable()
    assert table.acquire("x", [A, C]) == [A, C]
    assert table.acquire("y", [A, B]) == [B]  # A is already upstream
    assert table.upstream() == [A, C, B]
    assert table.holders(A) == {"x", "y"}
    assert table.release("x", [A]) == []  # y still wants it
    assert table.release("y", [A]) == [A]
    assert A not in table
    assert table.release("y", [A]) == []  # releasing twice is harmless


def test_acquiring_twice_does_not_double_count() -> None:
    table = RegistrationTable()
    table.acquire("x", [A, A])
    table.acquire("x", [A])
    assert table.release("x", [A]) == [A]


def test_the_request_past_the_cap_is_refused_and_nothing_changes() -> None:
    table = RegistrationTable(cap=41)
    for i, reg in enumerate(codes(41)):
        table.acquire(f"c{i}", [reg])
    before = (table.upstream(), {c: table.held_by(c) for c in table.consumers()})
    with pytest.raises(SubscriptionLimitError) as err:
        table.acquire("late", [Registration(TRADE, "999999")])
    assert err.value.code == "SUBSCRIPTION_LIMIT" and err.value.http_status == 429
    assert (table.upstream(), {c: table.held_by(c) for c in table.consumers()}) == before
    assert table.held_by("late") == frozenset()
    # Sharing a registration that is already upstream costs nothing, even at the cap.
    assert table.acquire("late", [codes(1)[0]]) == []
    assert len(table) == 41


def test_a_batch_is_all_or_nothing() -> None:
    table = RegistrationTable(cap=3)
    table.acquire("x", [A, B])
    with pytest.raises(SubscriptionLimitError):
        table.acquire("y", [A, C, Registration(BOOK, "000660")])  # two new, one slot
    assert table.upstream() == [A, B]
    assert table.held_by("y") == frozenset()


def test_removing_a_consumer_releases_only_what_nobody_else_holds_in_order() -> None:
    table = RegistrationTable()
    table.acquire("x", [A, B, C])
    table.acquire("y", [B])
    assert table.remove_consumer("x") == [A, C]
    assert table.upstream() == [B]
    assert "x" not in table.consumers()
    assert table.remove_consumer("x") == []


@pytest.mark.parametrize(
    ("tr_id", "key"),
    [("H0XXXXX0", "005930"), (TRADE, "5930"), (TRADE, "00593😀"), (TRADE, ""), (NOTICE, "a b")],
)
def test_invalid_registrations_are_bad_requests(tr_id: str, key: str) -> None:
    with pytest.raises(BadRequestError):
        registration(tr_id, key)


def test_valid_registrations() -> None:
    assert registration(TRADE, "005930") == A
    assert registration(TRADE, "Q500001").tr_key == "Q500001"  # ETN codes have 7 characters
    assert registration(NOTICE, "htsuser1") == Registration(NOTICE, "htsuser1")
