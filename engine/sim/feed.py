"""Pushes the synthetic market to subscribed sessions as multi-record KIS data frames."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from engine.kis import tr
from engine.kis.codec import build_data_frame, encode_book, encode_notice, encode_trade
from engine.kis.records import ExecutionNotice
from engine.kis.timeconv import kst_to_utc
from engine.sim import krx
from engine.sim.clock import SimTime
from engine.sim.market import instrument_for
from engine.sim.state import SimState

log = logging.getLogger(__name__)

_MAX_CATCH_UP_S = 900  # after a clock jump, don't replay more than this much market at once
_BOOKS_PER_CYCLE = 5


async def run_feed(state: SimState) -> None:
    last: SimTime | None = None
    while True:
        await asyncio.sleep(state.config.tick_interval_s)
        now = state.clock.now()
        if not now.is_open:
            last = None
            continue
        try:
            if last is None or (now.date == last.date and now.second < last.second):
                last = now  # first look (or the clock went back): start from here
                continue
            if now.date != last.date:
                await _emit(state, last.date, last.second + 1, krx.CLOSE_SECOND)
                await _emit(state, now.date, krx.OPEN_SECOND, now.second)
            elif now.second > last.second:
                first = max(last.second + 1, now.second - _MAX_CATCH_UP_S)
                await _emit(state, now.date, first, now.second)
        except Exception:  # the feed must outlive any one bad cycle
            log.exception("sim feed cycle failed")
        last = now


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _emit(state: SimState, day: str, first: int, last: int) -> None:
    if first > last:
        return
    market, batch = state.market, state.config.max_batch
    for symbol in sorted(state.registered_keys(tr.TRADE) | state.registered_keys(tr.BOOK)):
        if state.is_paused(symbol):
            continue
        trade_subs = state.subscribers(tr.TRADE, symbol)
        if trade_subs:
            trades = market.trades_between(symbol, day, first, last)
            for chunk in _chunks(trades, batch):
                frame = build_data_frame(tr.TRADE, [encode_trade(t) for t in chunk])
                for session in trade_subs:
                    await state.send(session, frame, len(chunk))
        book_subs = state.subscribers(tr.BOOK, symbol)
        if book_subs:
            seconds = range(max(first, last - _BOOKS_PER_CYCLE + 1), last + 1)
            books = [market.book(symbol, day, s) for s in seconds]
            wide = state.config.wide_book
            frame = build_data_frame(tr.BOOK, [encode_book(b, tr.BOOK_WIDTH + 3 * wide) for b in books])
            for session in book_subs:
                await state.send(session, frame, len(books))


async def send_notices(state: SimState, hts_id: str | None = None) -> int:
    """Send one encrypted fill notice to every notice subscription (optionally one HTS id)."""
    now = state.clock.now()
    sent = 0
    for session in list(state.sessions.values()):
        for tr_id, key in list(session.registrations):
            if tr_id not in tr.NOTICE_TRS or (hts_id is not None and key != hts_id):
                continue
            state.notice_seq += 1
            symbol = state.config.symbols[state.notice_seq % len(state.config.symbols)]
            last = state.market.last_trade(symbol, now.date, now.second)
            price = last.price if last else instrument_for(symbol).base_price
            notice = ExecutionNotice(
                customer_id=key,
                account_no="5012345601",
                order_no=f"{state.notice_seq:010d}",
                original_order_no="",
                side="02",
                rctf_cls="0",
                order_kind="00",
                order_cond="0",
                symbol=symbol,
                qty=10,
                price=price,
                time=krx.hhmmss(now.second),
                ts=kst_to_utc(now.date, krx.hhmmss(now.second)),
                trade_date=now.date,
                refused="0",
                is_fill=True,
                accepted="2",
                branch_no="01",
                order_qty=10,
                account_name="모의고객",
                symbol_name=instrument_for(symbol).name,
                order_price=price,
            )
            frame = build_data_frame(tr_id, [encode_notice(notice)], aes_key=session.aes_key)
            if await state.send(session, frame, 1):
                sent += 1
    return sent


async def run_notices(state: SimState) -> None:
    interval = state.config.notice_interval_s
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await send_notices(state)
        except Exception:
            log.exception("sim notice cycle failed")
