"""Suspect-minute tracking (engine/recorder/repair.py): which minutes the recorder did not see
whole, and when each is due for repair from KIS's minute chart."""

from __future__ import annotations

import json
from datetime import timedelta

from engine.kis.timeconv import kst_to_utc
from engine.recorder.builder import BarBuilder, TickOutcome
from engine.recorder.repair import SuspectMinutes
from engine.sim.market import SyntheticMarket

DAY = "20250312"


def minute(hhmm: str) -> int:
    return int(kst_to_utc(DAY, hhmm + "00").timestamp()) // 60


def pending(tracker: SuspectMinutes) -> set[tuple[str, int, str]]:
    return {(s.symbol, s.minute, s.reason) for s in tracker.pending()}


def trade(tracker: SuspectMinutes, symbol: str, hhmmss: str, cum: int, volume: int = 10) -> None:
    tracker.trade(symbol, DAY, kst_to_utc(DAY, hhmmss), cum, volume)


QUIET_OK = 3600.0  # stall threshold for tests about other causes


def test_the_minute_forming_at_start_is_suspect_unless_it_is_the_days_first_trade() -> None:
    tracker = SuspectMinutes(stall_s=QUIET_OK)
    trade(tracker, "005930", "100012", cum=5_000)  # joined mid-day, mid-minute
    trade(tracker, "005930", "100030", cum=5_010)
    trade(tracker, "005930", "100105", cum=5_020)
    trade(tracker, "000660", "090000", cum=300, volume=300)  # the opening print: nothing before
    assert pending(tracker) == {("005930", minute("1000"), "start")}


def test_a_restart_marks_from_the_checkpoint_minute_to_the_next_trade() -> None:
    tracker = SuspectMinutes(stall_s=QUIET_OK)
    tracker.restored("005930", DAY, minute("1003"))
    tracker.restored("000660", DAY, None)  # a checkpoint without a forming bar: nothing to mark
    assert pending(tracker) == {("005930", minute("1003"), "start")}
    trade(tracker, "005930", "100610", cum=9_000)
    assert {m for _, m, _ in pending(tracker)} == {minute(f"100{i}") for i in range(3, 7)}


def test_a_reconnect_marks_each_symbols_last_minute_at_once_and_up_to_its_next_trade() -> None:
    tracker = SuspectMinutes(stall_s=QUIET_OK)
    trade(tracker, "005930", "100000", cum=100, volume=100)
    trade(tracker, "000660", "100020", cum=50, volume=50)
    trade(tracker, "005930", "100150", cum=200)
    tracker.upstream_lost("reconnect")
    # Known before data flows again: the minutes the drop cut.
    assert pending(tracker) == {
        ("005930", minute("1001"), "reconnect"),
        ("000660", minute("1000"), "reconnect"),
    }
    trade(tracker, "005930", "100305", cum=400)
    trade(tracker, "005930", "100310", cum=410)  # the gap closed with the first trade
    assert {m for s, m, _ in pending(tracker) if s == "005930"} == {
        minute("1001"),
        minute("1002"),
        minute("1003"),
    }
    assert {m for s, m, _ in pending(tracker) if s == "000660"} == {minute("1000")}


def test_a_stall_is_silence_in_continuous_trading_longer_than_the_threshold() -> None:
    tracker = SuspectMinutes(stall_s=15)
    trade(tracker, "005930", "100000", cum=100, volume=100)
    trade(tracker, "000660", "100014", cum=50, volume=50)  # 14 s: quiet, not a stall
    assert pending(tracker) == set()
    trade(tracker, "005930", "100050", cum=300)  # 36 s without a trade of any symbol
    assert pending(tracker) == {
        ("005930", minute("1000"), "stall"),
        ("000660", minute("1000"), "stall"),
    }

    closing = SuspectMinutes(stall_s=15)
    trade(closing, "005930", "151955", cum=100, volume=100)
    trade(closing, "005930", "153000", cum=900)  # the closing call is silent by design
    assert ("005930", minute("1519"), "stall") not in pending(closing)


def test_acml_vol_jumps_mark_the_minutes_between_the_trades_around_them() -> None:
    market = SyntheticMarket(seed=4, rate=20, symbols_count=2)
    trades = [t for m in range(60, 66) for t in market.minute_trades("005930", DAY, m)]
    builder, tracker = BarBuilder(), SuspectMinutes(stall_s=QUIET_OK)

    def feed(batch):
        for t in batch:
            if builder.add(t) is TickOutcome.ACCEPTED:
                tracker.trade(t.symbol, t.trade_date, t.ts, t.cum_volume, t.volume)
        for jump in builder.take_jumps():
            tracker.jump(*jump)

    first_of = {int(t.ts.timestamp()) // 60: i for i, t in reversed(list(enumerate(trades)))}
    m61, m63 = minute("1001"), minute("1003")
    feed(trades[: first_of[m61] + 2])
    assert {r for _, _, r in pending(tracker)} == {"start"}  # joined at 10:00, nothing missed
    # Lose the rest of 10:01 and all of 10:02: the first 10:03 trade reveals the jump.
    feed(trades[first_of[m63] :])
    jumps = {m for _, m, r in pending(tracker) if r == "jump"}
    assert jumps == {m61, m61 + 1, m63}


def test_a_minute_is_due_only_after_it_ended_plus_the_delay() -> None:
    tracker = SuspectMinutes(delay_s=10)
    tracker.mark("005930", DAY, minute("1000"), minute("1001"), "jump")
    end_1000 = kst_to_utc(DAY, "100100")
    assert tracker.due(end_1000 + timedelta(seconds=9)) == {}
    due = tracker.due(end_1000 + timedelta(seconds=10))
    assert [s.minute for s in due["005930"]] == [minute("1000")]
    assert tracker.next_due() == end_1000 + timedelta(seconds=10)
    assert len(tracker.due(end_1000 + timedelta(seconds=70))["005930"]) == 2


def test_repaired_minutes_are_final_and_the_pending_set_survives_a_restart() -> None:
    tracker = SuspectMinutes()
    tracker.mark("005930", DAY, minute("1000"), minute("1002"), "reconnect")
    saved = json.loads(json.dumps(tracker.dump()))
    first = tracker.pending()[0]
    tracker.repaired([first])
    assert tracker.is_repaired("005930", first.ts)
    tracker.mark("005930", DAY, minute("1000"), minute("1000"), "jump")  # KIS's bar is final
    assert len(tracker) == 2
    tracker.retry([first])  # its write failed: pending again, not sealed
    assert len(tracker) == 3 and not tracker.is_repaired("005930", first.ts)

    again = SuspectMinutes()
    assert again.load(saved) == 3
    assert pending(again) == pending(tracker)
