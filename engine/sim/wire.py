"""How the simulator lays its records on the wire: live widths, realistic unread fields, and
frame sizes (docs/kis-simulator.md says where each choice comes from).

kisray's decoder reads a fixed set of indices; everything else in a live record is still there,
and a client that reads more of it should see values shaped like live ones, not filler.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TypeVar

from engine.kis import tr
from engine.kis.codec import encode_book, encode_trade
from engine.kis.records import BookSnapshot, Trade
from engine.sim.market import DayPlan, TradeDetail

# The field past VI_STND_PRC in the one 47-field capture we know of; its name is undocumented.
TRADE_FIELD_46 = "2"


def _sign(diff: int) -> str:
    return "2" if diff > 0 else "5" if diff < 0 else "3"


def _rate(num: float, den: float) -> str:
    return f"{num / den * 100:.2f}" if den else "0.00"


def trade_fields(t: Trade, d: TradeDetail, plan: DayPlan, width: int) -> list[str]:
    f = encode_trade(t, width)
    f[tr.T_SELL_COUNT] = str(d.sell_count)
    f[tr.T_BUY_COUNT] = str(d.buy_count)
    f[tr.T_NET_BUY_COUNT] = str(d.buy_count - d.sell_count)
    f[tr.T_SELL_QTY] = str(d.sell_qty)
    f[tr.T_BUY_QTY] = str(d.buy_qty)
    f[tr.T_BUY_RATE] = f"{d.buy_qty / max(1, t.cum_volume):.2f}"
    f[tr.T_VOLUME_RATE] = _rate(t.cum_volume, d.prev_volume)
    for at, when, ref in (
        (tr.T_OPEN_TIME, d.open_time, t.open),
        (tr.T_HIGH_TIME, d.high_time, t.high),
        (tr.T_LOW_TIME, d.low_time, t.low),
    ):
        f[at] = when
        f[at + 1] = _sign(t.price - ref)
        f[at + 2] = str(t.price - ref)
    f[tr.T_ASK_RSQN1] = str(d.ask_rsqn1)
    f[tr.T_BID_RSQN1] = str(d.bid_rsqn1)
    f[tr.T_TOTAL_ASK_RSQN] = str(d.total_ask)
    f[tr.T_TOTAL_BID_RSQN] = str(d.total_bid)
    # Shares outstanding are not modelled: 500 days of the previous day's volume stands in.
    f[tr.T_TURNOVER] = _rate(t.cum_volume, d.prev_volume * 500)
    f[tr.T_PREV_SAME_TIME_VOL] = str(d.prev_same_time_volume)
    f[tr.T_PREV_SAME_TIME_RATE] = _rate(t.cum_volume, d.prev_same_time_volume)
    f[tr.T_TERMINATION] = ""  # blank in every capture
    f[tr.T_VI_PRICE] = str(plan.open)  # equals the day's open in every capture
    if width > tr.TRADE_WIDTH:
        f[tr.TRADE_WIDTH] = TRADE_FIELD_46
    return f


def book_fields(b: BookSnapshot, plan: DayPlan, opening_qty: int, width: int) -> list[str]:
    f = encode_book(b, width)
    # Outside the auctions the expected price is 0, so its change is -prev_close, -100 %.
    change = b.expected_price - plan.prev_close
    f[tr.B_EXPECTED_VOLUME] = str(opening_qty)
    f[tr.B_EXPECTED_CHANGE] = str(change)
    f[tr.B_EXPECTED_SIGN] = _sign(change)
    f[tr.B_EXPECTED_RATE] = _rate(change, plan.prev_close)
    rng = random.Random(f"{b.symbol}|{b.trade_date}|{b.time}|icdc")
    f[tr.B_TOTAL_ASK_CHANGE] = str(rng.randint(-100, 100))
    f[tr.B_TOTAL_BID_CHANGE] = str(rng.randint(-100, 100))
    if width > tr.BOOK_WIDTH:
        f[tr.B_MID_PRICE] = str((b.asks[0] + b.bids[0]) // 2)
    return f


def burst_sizes(n: int, max_batch: int, rng: random.Random) -> Iterator[int]:
    """Split the n trades of one second into frame sizes.

    Live frames mostly carry one record; bigger ones come when many trades share an instant
    (the open, the close). Each trade joins the frame before it with probability n/(n+10):
    23 % when a second has three trades, 50 % at ten, so busy seconds make the bursts.
    """
    join = n / (n + 10)
    size = 0
    for _ in range(n):
        if size and size < max_batch and rng.random() < join:
            size += 1
            continue
        if size:
            yield size
        size = 1
    if size:
        yield size


_T = TypeVar("_T")


def chunks(items: Sequence[_T], sizes: Iterator[int]) -> Iterator[Sequence[_T]]:
    at = 0
    for size in sizes:
        yield items[at : at + size]
        at += size
