"""Tick → bar builder: exact OHLCV under duplicates, reordering, replays, gaps and restarts."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.domain.bars import MinuteBar
from engine.kis.records import Trade
from engine.kis.timeconv import kst_to_utc
from engine.recorder.builder import BarBuilder, Checkpoint, TickOutcome

DAY = "20250312"


def trade(symbol: str, hhmmss: str, price: int, volume: int, cum: int, day: str = DAY) -> Trade:
    return Trade(
        symbol, kst_to_utc(day, hhmmss), day, hhmmss, price, "2", 0, 0.0, 0.0,
        price, price, price, price, price, volume, cum, 0, 0.0, "1", "20", False, "0",
    )  # fmt: skip


def session(symbol: str, n: int, seed: int, start_s: int = 9 * 3600) -> list[Trade]:
    """A consistent trade stream: ACML_VOL = running sum of CNTG_VOL, times non-decreasing."""
    rng = random.Random(seed)
    out, cum, sec, price = [], 0, start_s, 70_000
    for _ in range(n):
        sec += rng.choice((0, 0, 1, 3, 20, 70))
        vol = rng.randint(1, 500)
        cum += vol
        price = max(100, price + rng.choice((-100, 0, 100)))
        hh = f"{sec // 3600:02d}{sec // 60 % 60:02d}{sec % 60:02d}"
        out.append(trade(symbol, hh, price, vol, cum))
    return out


def expected_bars(ticks: Iterable[Trade], floor: dict[str, int] | None = None) -> dict:
    """Independent computation: distinct ticks by (symbol, day, ACML_VOL), ordered by ACML_VOL;
    a tick's volume is the step from the tick below (its own CNTG_VOL for the lowest)."""
    distinct: dict[tuple[str, str, int], Trade] = {}
    for t in ticks:
        if floor and t.cum_volume <= floor.get(t.symbol, -1):
            continue
        distinct.setdefault((t.symbol, t.trade_date, t.cum_volume), t)
    bars: dict[tuple[str, datetime], list] = {}
    prev: dict[tuple[str, str], int] = {}
    for key in sorted(distinct):
        t = distinct[key]
        below = prev.get((t.symbol, t.trade_date))
        if below is None and floor and t.symbol in floor:
            below = floor[t.symbol]
        own = t.volume if below is None else t.cum_volume - below
        prev[(t.symbol, t.trade_date)] = t.cum_volume
        ts = t.ts.replace(second=0)
        bar = bars.get((t.symbol, ts))
        if bar is None:
            bars[(t.symbol, ts)] = [t.price, t.price, t.price, t.price, own]
        else:
            bar[1], bar[2] = max(bar[1], t.price), min(bar[2], t.price)
            bar[3] = t.price
            bar[4] += own
    return {k: tuple(v) for k, v in bars.items()}


def built_bars(builder: BarBuilder, drained: list[MinuteBar]) -> dict:
    result = {(b.symbol, b.ts): (b.open, b.high, b.low, b.close, b.volume) for b in drained}
    for b in builder.drain(until=datetime(2100, 1, 1, tzinfo=UTC)):
        result[(b.symbol, b.ts)] = (b.open, b.high, b.low, b.close, b.volume)
    return result


def mess_up(ticks: list[Trade], rng: random.Random, *, drop: float) -> list[Trade]:
    """Drop some (missed ticks), duplicate some, replay a stretch (reconnect), shuffle locally."""
    kept = [t for t in ticks if rng.random() >= drop]
    out: list[Trade] = []
    for t in kept:
        out.append(t)
        if rng.random() < 0.1:
            out.append(t)
    if out:
        a = rng.randrange(len(out))
        out[a:a] = out[max(0, a - rng.randint(1, 30)) : a]
    for i in range(len(out)):
        j = min(len(out) - 1, i + rng.randint(0, 8))
        out[i], out[j] = out[j], out[i]
    return out


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 300),
    drop=st.sampled_from((0.0, 0.05, 0.3)),
    drain_every=st.integers(1, 50),
)
def test_messy_streams_give_the_independent_bars(
    seed: int, n: int, drop: float, drain_every: int
) -> None:
    rng = random.Random(seed)
    clean = session("005930", n, seed) + session("000660", n // 2 + 1, seed + 1)
    clean.sort(key=lambda t: t.ts)
    stream = mess_up(clean, rng, drop=drop)
    builder = BarBuilder()
    drained: list[MinuteBar] = []
    for i, t in enumerate(stream):
        builder.add(t)
        if i % drain_every == 0:
            drained.extend(builder.drain())
    got = built_bars(builder, drained)
    assert got == expected_bars(stream)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 400))
def test_volume_is_never_double_counted(seed: int, n: int) -> None:
    rng = random.Random(seed)
    clean = session("005930", n, seed)
    stream = mess_up(clean, rng, drop=0.2)
    builder = BarBuilder(window=rng.choice((4, 16, 4096)))
    drained: list[MinuteBar] = []
    for t in stream:
        builder.add(t)
        drained.extend(builder.drain())
    got = built_bars(builder, drained)
    total = sum(v[4] for v in got.values())
    seen = sorted({t.cum_volume: t for t in stream}.values(), key=lambda t: t.cum_volume)
    if not seen:
        assert total == 0
        return
    # Exactly the day's ACML_VOL span: never more, whatever was duplicated or replayed.
    assert total <= seen[-1].cum_volume
    lowest = min(seen, key=lambda t: t.cum_volume)
    if builder.stale == 0:
        assert total == seen[-1].cum_volume - lowest.cum_volume + lowest.volume


def test_in_order_stream_matches_sums_of_cntg_vol() -> None:
    ticks = session("005930", 500, 3)
    builder = BarBuilder()
    builder.add_many(ticks)
    bars = builder.drain(until=datetime(2100, 1, 1, tzinfo=UTC))
    assert sum(b.volume for b in bars) == ticks[-1].cum_volume
    assert builder.missed_volume == 0
    first = bars[0]
    assert first.ts == ticks[0].ts.replace(second=0)
    assert first.open == ticks[0].price


def test_a_jump_in_acml_vol_is_counted_as_missed_volume() -> None:
    builder = BarBuilder()
    builder.add(trade("005930", "090000", 100, 10, 10))
    builder.add(trade("005930", "090130", 101, 5, 40))  # 25 shares traded unseen in between
    assert builder.missed_volume == 25
    bars = builder.drain(until=datetime(2100, 1, 1, tzinfo=UTC))
    assert [b.volume for b in bars] == [10, 30]


def test_duplicates_and_replays_add_nothing() -> None:
    builder = BarBuilder()
    a = trade("005930", "090000", 100, 10, 10)
    b = trade("005930", "090010", 102, 5, 15)
    assert builder.add(a) is TickOutcome.ACCEPTED
    assert builder.add(b) is TickOutcome.ACCEPTED
    assert builder.add(a) is TickOutcome.DUPLICATE
    assert builder.add(b) is TickOutcome.DUPLICATE
    bar = builder.forming_bar("005930")
    assert bar is not None and (bar.open, bar.high, bar.close, bar.volume) == (100, 102, 102, 15)


def test_a_late_tick_updates_its_own_minute_and_the_bar_is_emitted_again() -> None:
    builder = BarBuilder()
    builder.add(trade("005930", "090000", 100, 10, 10))
    builder.add(trade("005930", "090130", 104, 10, 40))  # 20 traded unseen before it
    builder.add(trade("005930", "090200", 101, 5, 45))  # closes 09:01
    first = builder.drain()
    assert [(b.ts.minute, b.close, b.volume) for b in first] == [(0, 100, 10), (1, 104, 30)]
    builder.add(trade("005930", "090050", 99, 20, 30))  # the unseen one arrives late
    again = builder.drain()
    assert [(b.ts.minute, b.low, b.close, b.volume) for b in again] == [
        (0, 99, 99, 30),
        (1, 104, 104, 10),
    ]
    assert builder.forming_bar("005930").volume == 5


def test_a_new_trading_day_closes_the_previous_one() -> None:
    builder = BarBuilder()
    builder.add(trade("005930", "153000", 100, 10, 1000, day="20250311"))
    builder.add(trade("005930", "090000", 105, 7, 7, day="20250312"))
    bars = builder.drain()
    assert [(b.ts, b.volume) for b in bars] == [(kst_to_utc("20250311", "153000"), 10)]
    assert builder.add(trade("005930", "152900", 100, 1, 999, day="20250310")) is TickOutcome.STALE


def test_bad_trades_are_rejected_and_change_nothing() -> None:
    builder = BarBuilder()
    assert builder.add(trade("005930", "090000", 0, 10, 10)) is TickOutcome.REJECTED
    assert builder.add(trade("005930", "090000", 100, -1, 10)) is TickOutcome.REJECTED
    assert builder.forming_bar("005930") is None
    assert builder.rejected == 2


def test_restart_from_a_checkpoint_does_not_double_count() -> None:
    ticks = session("005930", 400, 11)
    cut = 250
    first = BarBuilder()
    written: dict = {}
    for t in ticks[:cut]:
        first.add(t)
    for b in first.drain():
        written[(b.symbol, b.ts)] = (b.open, b.high, b.low, b.close, b.volume)
    (checkpoint,) = first.checkpoints()
    assert isinstance(checkpoint, Checkpoint) and checkpoint.cum_volume == ticks[cut - 1].cum_volume
    # The restarted builder sees a replay of what came before the crash, then the rest.
    second = BarBuilder()
    second.restore(checkpoint)
    for t in ticks[cut - 40 :]:
        second.add(t)
    for b in second.drain(until=datetime(2100, 1, 1, tzinfo=UTC)):
        written[(b.symbol, b.ts)] = (b.open, b.high, b.low, b.close, b.volume)
    assert written == expected_bars(ticks)
    assert sum(v[4] for v in written.values()) == ticks[-1].cum_volume


def test_ticks_lost_in_a_crash_are_recovered_as_volume() -> None:
    ticks = session("005930", 300, 5)
    first = BarBuilder()
    first.add_many(ticks[:200])
    written = {(b.symbol, b.ts): b.volume for b in first.drain()}
    (checkpoint,) = first.checkpoints()
    second = BarBuilder()
    second.restore(checkpoint)
    second.add_many(ticks[230:])  # 30 ticks arrived while the recorder was down
    for b in second.drain(until=datetime(2100, 1, 1, tzinfo=UTC)):
        written[(b.symbol, b.ts)] = b.volume
    assert sum(written.values()) == ticks[-1].cum_volume
    assert second.missed_volume == ticks[229].cum_volume - ticks[199].cum_volume


def test_prune_frees_old_bars_and_later_stragglers_are_stale() -> None:
    builder = BarBuilder(window=4)
    ticks = session("005930", 200, 9)
    builder.add_many(ticks)
    builder.drain(until=ticks[-1].ts + timedelta(minutes=1))
    builder.prune(keep_minutes=1)
    assert builder.add(ticks[0]) is TickOutcome.STALE
