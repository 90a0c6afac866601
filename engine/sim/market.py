"""A deterministic synthetic KRX market.

Everything derives from (seed, rate, symbol, date, minute): a day's close is an AR(1) walk
over trading days, its minute anchors a Brownian bridge from open to close, each minute's
OHLCV summary comes from that minute's own RNG, and the minute's ticks are drawn from the
same RNG *after* the summary and are built to hit it exactly. So REST bars (from summaries)
and live ticks (aggregated) agree by construction, and any minute is computable on its own.
"""

from __future__ import annotations

import math
import random
import zlib
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

from engine.kis.records import BookSnapshot, Trade
from engine.kis.timeconv import kst_to_utc
from engine.sim import krx

HISTORY_EPOCH = date(2020, 1, 1)
_DAILY_SIGMA = 0.015
_AR = 0.98  # mean reversion keeps prices near the base price whatever the date
_TRADE_VALUE_KRW = 3_000_000  # typical value of one trade, sets trade sizes


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    name: str
    base_price: int


DEFAULT_INSTRUMENTS: dict[str, Instrument] = {
    i.symbol: i
    for i in (
        Instrument("005930", "삼성전자", 71_000),
        Instrument("000660", "SK하이닉스", 178_000),
        Instrument("035420", "NAVER", 192_000),
        Instrument("035720", "카카오", 42_000),
        Instrument("005380", "현대차", 245_000),
        Instrument("051910", "LG화학", 365_000),
    )
}
DEFAULT_SYMBOLS: tuple[str, ...] = tuple(DEFAULT_INSTRUMENTS)


def instrument_for(symbol: str) -> Instrument:
    """Known instruments, or a stable made-up one so any code can be subscribed."""
    known = DEFAULT_INSTRUMENTS.get(symbol)
    if known is not None:
        return known
    price = krx.snap(5_000 + zlib.crc32(symbol.encode()) % 195_000)
    return Instrument(symbol, f"SIM{symbol}", price)


class PlannedMinute(NamedTuple):
    """One minute's aggregate, labelled by its start (KST)."""

    minute: int  # session minute index, 0 = 09:00
    open: int
    high: int
    low: int
    close: int
    volume: int
    value: int  # traded value, volume × the minute's typical price
    count: int  # type: ignore[assignment]  # shadows tuple.count(): the number of trades

    @property
    def start_second(self) -> int:
        return krx.OPEN_SECOND + self.minute * 60


class TradeDetail(NamedTuple):
    """What a live H0STCNT0 record carries beyond the Trade kisray reads (realistic filler)."""

    open_time: str  # OPRC_HOUR HHMMSS
    high_time: str  # HGPR_HOUR: when the day high was first reached
    low_time: str  # LWPR_HOUR
    sell_count: int  # SELN_CNTG_CSNU, cumulative for the day
    buy_count: int  # SHNU_CNTG_CSNU
    sell_qty: int  # SELN_CNTG_SMTN
    buy_qty: int  # SHNU_CNTG_SMTN
    ask_rsqn1: int
    bid_rsqn1: int
    total_ask: int
    total_bid: int
    prev_volume: int  # previous trading day's volume
    prev_same_time_volume: int  # previous day's cumulative volume at the same minute


class Tick(NamedTuple):
    second: int  # second of the KST day
    price: int
    volume: int
    side: str  # CCLD_DVSN: 1 buy-initiated, 5 sell-initiated


@dataclass(frozen=True, slots=True)
class DayPlan:
    symbol: str
    date: str  # YYYYMMDD KST
    prev_close: int
    open: int
    close: int
    bars: tuple[PlannedMinute, ...]  # minutes 0..379 and 390 (the closing print); count > 0
    cum_volume: tuple[int, ...]  # cum_volume[i] = volume of bars[:i]
    cum_value: tuple[int, ...]
    high_before: tuple[int, ...]  # day high over bars[:i] (0 before the first)
    low_before: tuple[int, ...]
    high_minute: tuple[int, ...]  # minute in which high_before[i] was first reached
    low_minute: tuple[int, ...]
    cum_count: tuple[int, ...]  # trades in bars[:i]
    buy_share: float  # share of the day's volume that is buyer-initiated before each minute
    index: dict[int, int]  # minute → position in bars

    @property
    def high(self) -> int:
        return self.high_before[-1]

    @property
    def low(self) -> int:
        return self.low_before[-1]

    @property
    def volume(self) -> int:
        return self.cum_volume[-1]

    @property
    def value(self) -> int:
        return self.cum_value[-1]


class SyntheticMarket:
    """Deterministic prices, bars and trades for any symbol and trading day."""

    def __init__(self, seed: int = 0, rate: float = 20.0, symbols_count: int = 6) -> None:
        self.seed = seed
        # Target trades per (simulated) second over all configured symbols.
        self._per_minute = max(0.05, rate * 60.0 / max(1, symbols_count))
        self._closes: dict[str, dict[date, float]] = {}
        self._days: OrderedDict[tuple[str, str], DayPlan] = OrderedDict()
        self._minutes: OrderedDict[tuple[str, str, int], _Minute] = OrderedDict()

    def _rng(self, symbol: str, day: str, tag: object) -> random.Random:
        return random.Random(f"{self.seed}|{self._per_minute}|{symbol}|{day}|{tag}")

    # -- daily path ---------------------------------------------------------------------------

    def _log_dev(self, symbol: str, d: date) -> float:
        """AR(1) log deviation from the base price at the close of trading day d."""
        memo = self._closes.setdefault(symbol, {})
        if d in memo:
            return memo[d]
        # Walk forward from the latest memoised day (or the epoch) to d.
        known = [k for k in memo if k < d]
        cur = max(known) if known else krx.previous_trading_day(HISTORY_EPOCH)
        x = memo.get(cur, 0.0)
        while cur < d:
            cur = krx.next_trading_day(cur)
            z = self._rng(symbol, krx.fmt_date(cur), "close").gauss(0.0, 1.0)
            x = _AR * x + _DAILY_SIGMA * z
            memo[cur] = x
        return memo[d]

    def close_price(self, symbol: str, d: date) -> int:
        base = instrument_for(symbol).base_price
        return krx.snap(base * math.exp(self._log_dev(symbol, d)))

    def day(self, symbol: str, day: str) -> DayPlan:
        key = (symbol, day)
        plan = self._days.get(key)
        if plan is None:
            plan = self._plan_day(symbol, day)
            self._days[key] = plan
            if len(self._days) > 2048:
                self._days.popitem(last=False)
        return plan

    def _plan_day(self, symbol: str, day: str) -> DayPlan:
        d = krx.parse_date(day)
        prev_close = self.close_price(symbol, krx.previous_trading_day(d))
        close = self.close_price(symbol, d)
        rng = self._rng(symbol, day, "day")
        open_ = krx.snap(prev_close * math.exp(rng.gauss(0.0, 0.004)))
        anchors = _bridge(rng, open_, close, krx.CONTINUOUS_MINUTES)
        bars = [self._minute_bar(symbol, day, m, anchors)[0] for m in range(krx.CONTINUOUS_MINUTES)]
        bars.append(self._closing_bar(symbol, day, close))
        cum_vol, cum_val, hi, lo, cnt = [0], [0], [0], [0], [0]
        hi_m, lo_m = [0], [0]
        for b in bars:
            cum_vol.append(cum_vol[-1] + b.volume)
            cum_val.append(cum_val[-1] + b.value)
            cnt.append(cnt[-1] + b.count)
            hi_m.append(b.minute if b.high > hi[-1] else hi_m[-1])
            lo_m.append(b.minute if not lo[-1] or b.low < lo[-1] else lo_m[-1])
            hi.append(max(hi[-1], b.high))
            lo.append(min(lo[-1], b.low) if lo[-1] else b.low)
        return DayPlan(
            symbol=symbol,
            date=day,
            prev_close=prev_close,
            open=open_,
            close=close,
            bars=tuple(bars),
            cum_volume=tuple(cum_vol),
            cum_value=tuple(cum_val),
            high_before=tuple(hi),
            low_before=tuple(lo),
            high_minute=tuple(hi_m),
            low_minute=tuple(lo_m),
            cum_count=tuple(cnt),
            buy_share=rng.uniform(0.45, 0.55),
            index={b.minute: i for i, b in enumerate(bars)},
        )

    # -- one minute ---------------------------------------------------------------------------

    def _minute_bar(
        self, symbol: str, day: str, m: int, anchors: list[int]
    ) -> tuple[PlannedMinute, random.Random]:
        rng = self._rng(symbol, day, m)
        o, c = anchors[m], anchors[m + 1]
        # U-shaped activity: bursts after the open and before the closing call.
        profile = (
            1.0 + 2.5 * math.exp(-m / 8.0) + 1.5 * math.exp(-(krx.CONTINUOUS_MINUTES - m) / 10)
        )
        n = max(1, int(self._per_minute * profile * rng.lognormvariate(0.0, 0.35) + rng.random()))
        ext_up = min(5, int(rng.expovariate(0.9)))
        ext_down = min(5, int(rng.expovariate(0.9)))
        if n == 1:
            c = h = lo = o
        else:
            h, lo = max(o, c), min(o, c)
            if n >= 3:
                h = krx.tick_up(h, ext_up)
            if n >= 4:
                lo = krx.tick_down(lo, ext_down)
        size = max(1, round(_TRADE_VALUE_KRW / o))
        volume = max(n, round(n * size * rng.lognormvariate(0.0, 0.3)))
        if m == 0:  # the opening auction print lands in the first minute
            volume += round(size * 60 * rng.lognormvariate(0.0, 0.3))
        typical = (o + h + lo + c) // 4
        return PlannedMinute(m, o, h, lo, c, volume, volume * typical, n), rng

    def _closing_bar(self, symbol: str, day: str, close: int) -> PlannedMinute:
        rng = self._rng(symbol, day, krx.CLOSE_MINUTE)
        volume = max(1, round(_TRADE_VALUE_KRW / close * 80 * rng.lognormvariate(0.0, 0.3)))
        return PlannedMinute(
            krx.CLOSE_MINUTE, close, close, close, close, volume, volume * close, 1
        )

    def ticks(self, symbol: str, day: str, minute: int) -> list[Tick]:
        """The trades of one minute, in order, aggregating exactly to its PlannedMinute."""
        plan = self.day(symbol, day)
        pos = plan.index.get(minute)
        if pos is None:
            return []
        bar = plan.bars[pos]
        start = bar.start_second
        if minute == krx.CLOSE_MINUTE:
            return [Tick(start, bar.close, bar.volume, "1")]
        anchors = [b.open for b in plan.bars[: krx.CONTINUOUS_MINUTES]] + [plan.close]
        again, rng = self._minute_bar(symbol, day, minute, anchors)
        assert again == bar  # same RNG stream as the summary
        n = bar.count
        seconds = sorted(rng.randrange(60) for _ in range(n))
        if minute == 0:
            seconds[0] = 0  # 09:00:00 opening auction print
        prices = self._tick_prices(rng, bar)
        weights = [rng.expovariate(1.0) for _ in range(n)]
        if minute == 0:
            weights[0] += 60.0
        volumes = _partition(bar.volume, weights)
        out = []
        prev = bar.open
        for i in range(n):
            p = prices[i]
            side = "1" if p >= prev or i == 0 else "5"
            out.append(Tick(start + seconds[i], p, volumes[i], side))
            prev = p
        return out

    @staticmethod
    def _tick_prices(rng: random.Random, bar: PlannedMinute) -> list[int]:
        n = bar.count
        prices = [bar.open] * n
        if n == 1:
            return prices
        prices[-1] = bar.close
        fixed = {0, n - 1}
        if n == 3:
            prices[1] = bar.high
            fixed.add(1)
        elif n >= 4:
            hi_pos, lo_pos = rng.sample(range(1, n - 1), 2)
            prices[hi_pos], prices[lo_pos] = bar.high, bar.low
            fixed.update((hi_pos, lo_pos))
        p = bar.open
        for i in range(1, n - 1):
            if i in fixed:
                p = prices[i]
                continue
            step = rng.choice((-1, 0, 0, 1))
            if step > 0:
                p = min(bar.high, krx.tick_up(p))
            elif step < 0:
                p = max(bar.low, krx.tick_down(p))
            prices[i] = p
        return prices

    # -- records for the wire -----------------------------------------------------------------

    def minute_trades(self, symbol: str, day: str, minute: int) -> list[Trade]:
        """H0STCNT0 records of one minute (cached: the live feed slices these)."""
        return self._minute(symbol, day, minute).trades

    def trade_details(self, symbol: str, day: str, minute: int) -> list[TradeDetail]:
        """The unread H0STCNT0 fields of minute_trades(), one per trade."""
        return self._minute(symbol, day, minute).details

    def _first_at(self, symbol: str, day: str, minute: int, price: int) -> str:
        """HHMMSS of the first tick of `minute` at `price` (where a day high/low was set)."""
        for t in self.ticks(symbol, day, minute):
            if t.price == price:
                return krx.hhmmss(t.second)
        return krx.hhmmss(krx.OPEN_SECOND + minute * 60)

    def _minute(self, symbol: str, day: str, minute: int) -> _Minute:
        key = (symbol, day, minute)
        cached = self._minutes.get(key)
        if cached is not None:
            return cached
        plan = self.day(symbol, day)
        pos = plan.index.get(minute)
        trades: list[Trade] = []
        details: list[TradeDetail] = []
        if pos is not None:
            bar = plan.bars[pos]
            cum_vol, cum_val = plan.cum_volume[pos], plan.cum_value[pos]
            high = plan.high_before[pos] or bar.open
            low = plan.low_before[pos] or bar.open
            high_time = self._first_at(symbol, day, plan.high_minute[pos], high) if pos else ""
            low_time = self._first_at(symbol, day, plan.low_minute[pos], low) if pos else ""
            # Buy/sell split before this minute from the day's share; within it, tick by tick.
            buy_qty = round(cum_vol * plan.buy_share)
            sell_qty = cum_vol - buy_qty
            buy_n = round(plan.cum_count[pos] * plan.buy_share)
            sell_n = plan.cum_count[pos] - buy_n
            prev = self.day(symbol, _prev_day(day))
            prev_pos = min(pos, len(prev.cum_volume) - 1)
            typical = bar.value // bar.volume
            size = max(1, round(_TRADE_VALUE_KRW / bar.open))
            rng = self._rng(symbol, day, f"rsqn{minute}")
            run_vol = 0
            for t in self.ticks(symbol, day, minute):
                run_vol += t.volume
                if t.price > high or not high_time:
                    high, high_time = max(high, t.price), krx.hhmmss(t.second)
                if t.price < low or not low_time:
                    low, low_time = min(low, t.price), krx.hhmmss(t.second)
                if t.side == "1":
                    buy_qty, buy_n = buy_qty + t.volume, buy_n + 1
                else:
                    sell_qty, sell_n = sell_qty + t.volume, sell_n + 1
                strength = round(buy_qty / sell_qty * 100, 2) if sell_qty else 0.0
                trades.append(
                    _trade(
                        plan, t, high, low, cum_vol + run_vol, cum_val + run_vol * typical, strength
                    )
                )
                ask1, bid1 = size * rng.randint(1, 40), size * rng.randint(1, 40)
                details.append(
                    TradeDetail(
                        "090000",
                        high_time,
                        low_time,
                        sell_n,
                        buy_n,
                        sell_qty,
                        buy_qty,
                        ask1,
                        bid1,
                        ask1 + size * rng.randint(40, 400),
                        bid1 + size * rng.randint(40, 400),
                        prev.volume,
                        prev.cum_volume[prev_pos],
                    )
                )
        minute_data = _Minute(trades, details, [_second(t) for t in trades])
        self._minutes[key] = minute_data
        if len(self._minutes) > 256:
            self._minutes.popitem(last=False)
        return minute_data

    def _slice(self, symbol: str, day: str, minute: int, first: int, last: int) -> _Minute:
        """The minute's trades with first <= second-of-day <= last: the live feed asks every
        few milliseconds, and a scan of the whole minute each time cost the simulator half a
        core at 2,000 trades/s (bench_scale)."""
        trades, details, seconds = self._minute(symbol, day, minute)
        lo, hi = bisect_left(seconds, first), bisect_right(seconds, last)
        return _Minute(trades[lo:hi], details[lo:hi], seconds[lo:hi])

    def trades_between(self, symbol: str, day: str, first: int, last: int) -> list[Trade]:
        """Trades with first <= second-of-day <= last."""
        out: list[Trade] = []
        lo_m = max(0, krx.minute_of(first))
        hi_m = min(krx.CLOSE_MINUTE, krx.minute_of(last))
        for m in range(lo_m, hi_m + 1):
            start = krx.OPEN_SECOND + m * 60
            if first <= start and start + 59 <= last:
                out.extend(self.minute_trades(symbol, day, m))
            else:
                out.extend(self._slice(symbol, day, m, first, last).trades)
        return out

    def detailed_trades_between(
        self, symbol: str, day: str, first: int, last: int
    ) -> list[tuple[Trade, TradeDetail]]:
        """(trade, its unread wire fields) with first <= second-of-day <= last."""
        out: list[tuple[Trade, TradeDetail]] = []
        for m in range(
            max(0, krx.minute_of(first)), min(krx.CLOSE_MINUTE, krx.minute_of(last)) + 1
        ):
            trades, details, _ = self._slice(symbol, day, m, first, last)
            out.extend(zip(trades, details, strict=True))
        return out

    def last_trade(self, symbol: str, day: str, second: int) -> Trade | None:
        m = min(krx.CLOSE_MINUTE, krx.minute_of(second))
        while m >= 0:
            trades, _, seconds = self._minute(symbol, day, m)
            upto = bisect_right(seconds, second)
            if upto:
                return trades[upto - 1]
            m -= 1
        return None

    def book(self, symbol: str, day: str, second: int) -> BookSnapshot:
        """A 10-level snapshot around the last trade at `second`."""
        plan = self.day(symbol, day)
        last = self.last_trade(symbol, day, second)
        price = last.price if last else plan.open
        cum_volume = last.cum_volume if last else 0
        if last is None or last.side == "1":
            ask1, bid1 = price, krx.tick_down(price)
        else:
            ask1, bid1 = krx.tick_up(price), price
        rng = self._rng(symbol, day, f"book{second}")
        size = max(1, round(_TRADE_VALUE_KRW / price))
        asks = tuple(krx.tick_up(ask1, k) for k in range(10))
        bids = tuple(krx.tick_down(bid1, k) for k in range(10))
        ask_sizes = tuple(size * rng.randint(1, 40) for _ in range(10))
        bid_sizes = tuple(size * rng.randint(1, 40) for _ in range(10))
        closing_call = krx.CONTINUOUS_END_SECOND <= second < krx.CLOSE_SECOND
        return BookSnapshot(
            symbol,
            kst_to_utc(day, krx.hhmmss(second)),
            day,
            krx.hhmmss(second),
            "A" if closing_call else "0",
            asks,
            bids,
            ask_sizes,
            bid_sizes,
            sum(ask_sizes),
            sum(bid_sizes),
            plan.close if closing_call else 0,
            plan.bars[-1].volume if closing_call else 0,
            cum_volume,
        )


class _Minute(NamedTuple):
    trades: list[Trade]
    details: list[TradeDetail]
    seconds: list[int]  # each trade's second of the day, in order


def _second(t: Trade) -> int:
    s = t.time
    return int(s[:2]) * 3600 + int(s[2:4]) * 60 + int(s[4:])


def _prev_day(day: str) -> str:
    return krx.fmt_date(krx.previous_trading_day(krx.parse_date(day)))


def _trade(
    plan: DayPlan, t: Tick, high: int, low: int, cum_vol: int, cum_val: int, strength: float
) -> Trade:
    change = t.price - plan.prev_close
    sign = "2" if change > 0 else "5" if change < 0 else "3"
    if t.side == "1":
        ask1, bid1 = t.price, krx.tick_down(t.price)
    else:
        ask1, bid1 = krx.tick_up(t.price), t.price
    hhmmss = krx.hhmmss(t.second)
    return Trade(
        plan.symbol,
        kst_to_utc(plan.date, hhmmss),
        plan.date,
        hhmmss,
        t.price,
        sign,
        change,
        round(change / plan.prev_close * 100, 2),
        round(cum_val / cum_vol, 2),
        plan.open,
        high,
        low,
        ask1,
        bid1,
        t.volume,
        cum_vol,
        cum_val,
        strength,
        t.side,
        "20",
        False,
        "0",
    )


def _bridge(rng: random.Random, open_: int, close: int, steps: int) -> list[int]:
    """Tick-grid prices anchors[0..steps]: a Brownian bridge in log space from open to close."""
    sigma = _DAILY_SIGMA / math.sqrt(steps)
    walk = [0.0]
    for _ in range(steps):
        walk.append(walk[-1] + rng.gauss(0.0, sigma))
    lo, lc = math.log(open_), math.log(close)
    out = []
    for i, w in enumerate(walk):
        frac = i / steps
        out.append(krx.snap(math.exp(lo + frac * (lc - lo) + w - frac * walk[-1])))
    out[0], out[-1] = open_, close
    return out


def _partition(total: int, weights: list[float]) -> list[int]:
    """Split `total` into len(weights) positive integers proportional to the weights."""
    n = len(weights)
    spare = total - n
    scale = spare / sum(weights)
    parts = [1 + int(w * scale) for w in weights]
    parts[max(range(n), key=weights.__getitem__)] += total - sum(parts)
    return parts
