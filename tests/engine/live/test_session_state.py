"""The session rules the replica applies at once and the session actor repeats."""

from __future__ import annotations

import pytest

from engine.errors import SubscriptionLimitError
from engine.live.channels import channel_names, parse_channels
from engine.live.session_state import SessionLimits, SessionState


def names(result: tuple[list, list]) -> tuple[list[str], list[str]]:
    return channel_names(result[0]), channel_names(result[1])


def test_limits_are_all_or_nothing_and_order_is_kept() -> None:
    state = SessionState(SessionLimits(max_channels=3, max_symbols=2))
    assert names(state.subscribe(parse_channels(["trade:005930", "book:005930"]))) == (
        ["trade:005930", "book:005930"],
        ["trade:005930", "book:005930"],
    )
    for refused in [
        ["trade:000660", "book:000660"],  # 4 channels > 3
        ["trade:000660", "trade:035420"],  # 3 symbols > 2
    ]:
        with pytest.raises(SubscriptionLimitError):
            state.subscribe(parse_channels(refused))
    assert channel_names(state.channels()) == ["trade:005930", "book:005930"]  # unchanged


def test_ops_are_idempotent_so_a_copy_can_replay_them() -> None:
    state = SessionState()
    state.subscribe(parse_channels(["trade:005930"]))
    assert names(state.subscribe(parse_channels(["trade:005930"]))) == ([], ["trade:005930"])
    assert names(state.unsubscribe(parse_channels(["book:005930"]))) == ([], ["trade:005930"])
    state.replace(parse_channels(["candle:005930:5m", "trade:000660"]))
    assert channel_names(state.channels()) == ["candle:005930:5m", "trade:000660"]
    state.replace([])
    assert state.channels() == []
