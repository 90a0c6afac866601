"""The session rules the replica applies at once and the session actor repeats."""

from __future__ import annotations

import pytest

from engine.errors import BadRequestError, InvalidSymbolError, SubscriptionLimitError
from engine.live.session_state import SessionLimits, SessionState


def test_limits_are_all_or_nothing_and_order_is_kept() -> None:
    state = SessionState(SessionLimits(max_channels=3, max_symbols=2))
    assert state.subscribe(["trade:005930", "book:005930"]) == (
        ["trade:005930", "book:005930"],
        ["trade:005930", "book:005930"],
    )
    for names, error in [
        (["trade:000660", "book:000660"], SubscriptionLimitError),  # 4 channels > 3
        (["trade:000660", "trade:035420"], SubscriptionLimitError),  # 3 symbols > 2
        (["trade:0"], InvalidSymbolError),
        ([], BadRequestError),
        ("trade:005930", BadRequestError),
    ]:
        with pytest.raises(error):
            state.subscribe(names)
    assert state.channels() == ["trade:005930", "book:005930"]  # refused: nothing changed


def test_ops_are_idempotent_so_a_copy_can_replay_them() -> None:
    state = SessionState()
    state.subscribe(["trade:005930"])
    assert state.subscribe(["trade:005930"]) == ([], ["trade:005930"])
    assert state.unsubscribe(["book:005930"]) == ([], ["trade:005930"])
    state.replace(["candle:005930:5m", "trade:000660"])
    assert state.channels() == ["candle:005930:5m", "trade:000660"]
    state.replace([])
    assert state.channels() == []
