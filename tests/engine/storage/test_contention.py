"""retry_on_contention: a contended statement is tried again, anything else is not."""

from __future__ import annotations

import pytest

from engine.storage.contention import retry_on_contention


class Busy(Exception):
    pass


def attempts(*outcomes: Exception | str):
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return call, calls


async def run(call) -> str:
    return await retry_on_contention(
        call, lambda exc: isinstance(exc, Busy), tries=3, wait_s=0.0, what="test"
    )


async def test_contention_is_tried_again_until_it_passes() -> None:
    call, calls = attempts(Busy(), Busy(), "done")
    assert await run(call) == "done" and len(calls) == 3


async def test_the_last_try_and_other_errors_are_raised() -> None:
    call, calls = attempts(Busy(), Busy(), Busy("third"))
    with pytest.raises(Busy, match="third"):
        await run(call)
    assert len(calls) == 3
    call, calls = attempts(ValueError("not contention"), "unreached")
    with pytest.raises(ValueError):
        await run(call)
    assert len(calls) == 1
