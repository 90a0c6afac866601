"""Pushes the synthetic market to subscribed sessions as multi-record KIS data frames."""

from __future__ import annotations

import asyncio
import logging
import random

from engine.kis import tr
from engine.kis.codec import build_data_frame, encode_notice
from engine.kis.records import ExecutionNotice
from engine.kis.timeconv import kst_to_utc
from engine.sim import krx
from engine.sim.clock import SimTime
from engine.sim.market import instrument_for
from engine.sim.state import SimState
from engine.sim.wire import book_fields, burst_sizes, chunks, trade_fields

log = logging.getLogger(__name__)

_MAX_CATCH_UP_S = 900  # after a clock jump, don't replay more than this much market at once
_BOOK_SECONDS_PER_CYCLE = 5  # at high speed, the last few seconds' books, not every one


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


def trade_frames(state: SimState, symbol: str, day: str, first: int, last: int) -> list[str]:
    """The H0STCNT0 frames of [first, last] for one symbol, sized by the burst model (or packed
    `max_batch` to a frame, the older shape)."""
    config, market = state.config, state.market
    plan = market.day(symbol, day)
    detailed = market.detailed_trades_between(symbol, day, first, last)
    frames: list[str] = []
    if config.trade_frames == "packed":  # the older shape: every trade of the cycle, packed
        for i in range(0, len(detailed), config.max_batch):
            chunk = detailed[i : i + config.max_batch]
            records = [trade_fields(t, d, plan, config.trade_width) for t, d in chunk]
            frames.append(build_data_frame(tr.TRADE, records))
        return frames
    at = 0
    while at < len(detailed):
        second = detailed[at][0].time
        end = at
        while end < len(detailed) and detailed[end][0].time == second:
            end += 1
        rng = random.Random(f"{config.seed}|{symbol}|{day}|{second}|burst")
        for burst in chunks(detailed[at:end], burst_sizes(end - at, config.max_batch, rng)):
            records = [trade_fields(t, d, plan, config.trade_width) for t, d in burst]
            frames.append(build_data_frame(tr.TRADE, records))
        at = end
    return frames


def book_frames(state: SimState, symbol: str, day: str, first: int, last: int) -> list[str]:
    """H0STASP0 frames: one snapshot per second, `books_per_frame` snapshots per frame."""
    config, market = state.config, state.market
    plan = market.day(symbol, day)
    opening = market.minute_trades(symbol, day, 0)
    opening_qty = opening[0].volume if opening else 0
    seconds = range(max(first, last - _BOOK_SECONDS_PER_CYCLE + 1), last + 1)
    books = [
        book_fields(market.book(symbol, day, s), plan, opening_qty, config.book_width)
        for s in seconds
    ]
    per = config.books_per_frame
    return [build_data_frame(tr.BOOK, books[i : i + per]) for i in range(0, len(books), per)]


async def _emit(state: SimState, day: str, first: int, last: int) -> None:
    if first > last:
        return
    for symbol in sorted(state.registered_keys(tr.TRADE) | state.registered_keys(tr.BOOK)):
        if state.is_paused(symbol):
            continue
        for tr_id, build in ((tr.TRADE, trade_frames), (tr.BOOK, book_frames)):
            subs = state.subscribers(tr_id, symbol)
            if not subs:
                continue
            for frame in build(state, symbol, day, first, last):
                count = int(frame[11:14])
                for session in subs:
                    await state.send(session, frame, count)


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
