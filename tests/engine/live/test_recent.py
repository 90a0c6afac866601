"""What a resumed tab is sent of the trades it missed (engine.live.recent)."""

from __future__ import annotations

import json

from engine.live.channels import encode, trade_data, trade_message
from engine.live.recent import CatchUp, RecentTrades
from tests.engine.live.test_hub import run


def test_the_trades_after_the_last_one_seen_when_all_are_held() -> None:
    recent = RecentTrades()
    recent.add(run(100, 10))  # cum 101 … 110
    state, missed = recent.after("005930", 104)
    assert state is CatchUp.REPLAY
    assert [t.cum_volume for t in missed] == [105, 106, 107, 108, 109, 110]
    # The oldest held trade directly follows the tab's last one: still complete.
    assert recent.after("005930", 100) == (CatchUp.REPLAY, run(100, 10))
    assert recent.after("005930", 110) == (CatchUp.REPLAY, [])


def test_a_gap_when_the_first_missed_trade_is_gone() -> None:
    recent = RecentTrades(per_symbol=4)
    recent.add(run(100, 10))  # only 107 … 110 are held
    state, missed = recent.after("005930", 104)
    assert state is CatchUp.GAP
    assert [t.cum_volume for t in missed] == [107, 108, 109, 110]
    assert recent.after("005930", 105)[0] is CatchUp.GAP
    assert recent.after("005930", 106)[0] is CatchUp.REPLAY


def test_wait_while_the_tab_is_ahead_or_nothing_is_held() -> None:
    recent = RecentTrades()
    assert recent.after("005930", 5) == (CatchUp.WAIT, [])
    recent.add(run(100, 3))
    assert recent.after("005930", 120) == (CatchUp.WAIT, [])
    assert recent.after("000660", 1) == (CatchUp.WAIT, [])  # another symbol: nothing held


def test_a_forgotten_symbol_holds_nothing() -> None:
    recent = RecentTrades()
    recent.add(run(100, 3) + run(50, 2, symbol="000660"))
    recent.forget(["005930"])
    assert recent.after("005930", 100) == (CatchUp.WAIT, [])
    assert recent.after("000660", 50)[0] is CatchUp.REPLAY


def test_a_replay_is_the_trade_message_of_the_missed_trades() -> None:
    recent = RecentTrades()
    recent.add(run(100, 5))  # cum 101 … 105
    state, text = recent.replay("005930", 102)
    assert state is CatchUp.REPLAY
    missed = run(100, 5)[2:]
    whole = {"type": "trade", "symbol": "005930", "data": [trade_data(t) for t in missed]}
    assert text == encode({**whole, "replayed": True})  # the same bytes, encoded per trade
    assert recent.replay("005930", 102) == (state, text)  # again: from the cached trades
    assert recent.replay("005930", 105) == (CatchUp.REPLAY, None)
    assert recent.replay("005930", 200) == (CatchUp.WAIT, None)


def test_a_live_trade_message_from_trades_encoded_one_by_one() -> None:
    trades = run(100, 3)
    text = trade_message("005930", [encode(trade_data(t)) for t in trades])
    assert text == encode(
        {"type": "trade", "symbol": "005930", "data": [trade_data(t) for t in trades]}
    )
    assert json.loads(text)["data"][2]["cum_volume"] == 103


def test_trades_added_after_a_replay_are_in_the_next_one() -> None:
    recent = RecentTrades()
    recent.add(run(100, 3))
    recent.replay("005930", 100)  # encodes 101 … 103
    recent.add(run(103, 2))
    _, text = recent.replay("005930", 102)
    data = [trade_data(t) for t in run(102, 3)]
    assert text == encode({"type": "trade", "symbol": "005930", "data": data, "replayed": True})


def test_only_the_last_per_symbol_trades_count_however_many_were_added() -> None:
    recent = RecentTrades(per_symbol=4)
    for first in range(100, 130, 3):
        recent.add(run(first, 3))  # cum 101 … 130, in batches
        recent.replay("005930", first)  # encodes what is held so far
    data = [trade_data(t) for t in run(126, 4)]
    replayed = encode({"type": "trade", "symbol": "005930", "data": data, "replayed": True})
    assert recent.replay("005930", 126) == (CatchUp.REPLAY, replayed)
    assert [t.cum_volume for t in recent.after("005930", 126)[1]] == [127, 128, 129, 130]
    assert recent.after("005930", 126)[0] is CatchUp.REPLAY
    state, missed = recent.after("005930", 120)
    assert state is CatchUp.GAP
    assert [t.cum_volume for t in missed] == [127, 128, 129, 130]


def test_a_new_trading_day_starts_afresh() -> None:
    recent = RecentTrades()
    recent.add(run(5000, 3))  # yesterday's last trades
    # cum_volume restarts with the next KST trading date. (Its pre-market trades' UTC time is
    # still the day before: only the trading date tells the days apart.)
    today = [t._replace(trade_date="20250313") for t in run(0, 2)]
    recent.add(today)
    assert recent.after("005930", 0) == (CatchUp.REPLAY, today)
    assert recent.after("005930", 5003)[0] is CatchUp.WAIT  # yesterday's tab: nothing to replay


def test_a_trade_out_of_order_is_not_held() -> None:
    recent = RecentTrades()
    recent.add(run(95, 5))  # cum 96 … 100
    recent.add(run(89, 1) + run(100, 1))  # 90 comes late, then 101
    state, missed = recent.after("005930", 95)
    assert state is CatchUp.REPLAY
    assert [t.cum_volume for t in missed] == [96, 97, 98, 99, 100, 101]
