"""Data frames `E|TR_ID|NNN|payload` ↔ typed records (docs/kis-protocol.md §3).

Record width is always total fields ÷ NNN, and only known indices are read, so fields that
KIS appends later never break parsing (46 or 47 trade fields, 59, 62 or 63 book fields all parse).
A malformed frame raises KisProtocolError; a malformed record inside an otherwise good frame
costs only itself: the frame keeps its good records and lists the bad ones in `rejected`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from engine.errors import KisProtocolError
from engine.kis import tr
from engine.kis.control import Ack, PingPong, parse_control
from engine.kis.crypto import AesKey
from engine.kis.records import BookSnapshot, ExecutionNotice, Record, Trade
from engine.kis.timeconv import kst_to_utc, kst_today


class FrameKind(StrEnum):
    DATA = "data"  # starts with 0 (plain) or 1 (encrypted)
    CONTROL = "control"  # starts with { : an ack or PINGPONG


@dataclass(frozen=True, slots=True)
class RealtimeFrame:
    """One decoded data frame: its good records, in wire order, plus the raw text.

    `rejected` holds the raw text of each record that did not decode (fields joined by ^).
    """

    tr_id: str
    encrypted: bool
    records: tuple[Record, ...]
    raw: str
    rejected: tuple[str, ...] = ()


def classify_frame(raw: str) -> FrameKind:
    """Dispatch rule: first character 0/1 → data, { → control JSON."""
    first = raw[:1]
    if first == "0" or first == "1":
        return FrameKind.DATA
    if first == "{":
        return FrameKind.CONTROL
    raise KisProtocolError("frame is neither data (0/1) nor control JSON ({)", raw)


# -- decoding ---------------------------------------------------------------------------------

# (fields, count, width, session date) → (records, offsets of the records that did not decode)
_Parser = Callable[[list[str], int, int, str], tuple[Sequence[Record], list[int]]]
# What int()/float()/kst_to_utc raise on bad text; caught per record (a try costs nothing in
# 3.11+ until it fires, so the good path stays as fast as before).
_RECORD_ERRORS = (ValueError, IndexError, TypeError, OverflowError)


def _trades(
    f: list[str], count: int, width: int, _session_date: str
) -> tuple[Sequence[Record], list[int]]:
    out: list[Trade] = []
    bad: list[int] = []
    append = out.append
    for b in range(0, count * width, width):
        try:
            date = f[b + 33]
            hhmmss = f[b + 1]
            trade = Trade(
                f[b],
                kst_to_utc(date, hhmmss),
                date,
                hhmmss,
                int(f[b + 2]),
                f[b + 3],
                int(f[b + 4]),
                float(f[b + 5]),
                float(f[b + 6]),
                int(f[b + 7]),
                int(f[b + 8]),
                int(f[b + 9]),
                int(f[b + 10]),
                int(f[b + 11]),
                int(f[b + 12]),
                int(f[b + 13]),
                int(f[b + 14]),
                float(f[b + 18]),
                f[b + 21],
                f[b + 34],
                f[b + 35] == "Y",
                f[b + 43],
            )
        except _RECORD_ERRORS:
            bad.append(b)
            continue
        append(trade)
    return out, bad


# Price ladders repeat from one snapshot to the next (they move only when the best price
# does), so each side's 10 prices are cached by their exact wire text: a hit costs one join and
# one dict lookup instead of ten int() calls. Sizes change every snapshot and are not cached.
# Only successfully converted ladders are stored, so malformed text still raises at decode.
_LADDERS: dict[str, tuple[int, ...]] = {}
_LADDERS_MAX = 10_000
_new_tuple = tuple.__new__  # builds the NamedTuple without its Python-level __new__ frame


def _ladder(fields: list[str], key: str) -> tuple[int, ...]:
    ladder = tuple(map(int, fields))
    if len(_LADDERS) >= _LADDERS_MAX:
        _LADDERS.clear()
    _LADDERS[key] = ladder
    return ladder


def _books(
    f: list[str], count: int, width: int, session_date: str
) -> tuple[Sequence[Record], list[int]]:
    out: list[BookSnapshot] = []
    bad: list[int] = []
    append = out.append
    cached = _LADDERS.get
    join = "^".join
    last_time, ts = None, None
    for b in range(0, count * width, width):
        try:
            hhmmss = f[b + 1]
            if hhmmss != last_time:  # records in one frame usually share the second
                ts = kst_to_utc(session_date, hhmmss)
                last_time = hhmmss
            side = f[b + 3 : b + 13]
            key = join(side)
            asks = cached(key) or _ladder(side, key)
            side = f[b + 13 : b + 23]
            key = join(side)
            bids = cached(key) or _ladder(side, key)
            sizes = list(map(int, f[b + 23 : b + 43]))  # one map over both size ladders
            book = _new_tuple(
                BookSnapshot,
                (
                    f[b],
                    ts,
                    session_date,
                    hhmmss,
                    f[b + 2],
                    asks,
                    bids,
                    tuple(sizes[0:10]),
                    tuple(sizes[10:20]),
                    int(f[b + 43]),
                    int(f[b + 44]),
                    int(f[b + 47]),
                    int(f[b + 48]),
                    int(f[b + 53]),
                ),
            )
        except _RECORD_ERRORS:
            last_time = None  # the bad record's time may have been the one that failed
            bad.append(b)
            continue
        append(book)
    return out, bad


def _int_or_zero(value: str) -> int:
    # Acceptance notices leave some numeric fields blank.
    return int(value) if value else 0


def _notices(
    f: list[str], count: int, width: int, session_date: str
) -> tuple[Sequence[Record], list[int]]:
    out: list[ExecutionNotice] = []
    bad: list[int] = []
    for b in range(0, count * width, width):
        try:
            hhmmss = f[b + tr.N_TIME]
            notice = ExecutionNotice(
                customer_id=f[b + tr.N_CUST_ID],
                account_no=f[b + tr.N_ACCOUNT],
                order_no=f[b + tr.N_ORDER_NO],
                original_order_no=f[b + tr.N_ORIGINAL_ORDER_NO],
                side=f[b + tr.N_SIDE],
                rctf_cls=f[b + tr.N_RCTF],
                order_kind=f[b + tr.N_ORDER_KIND],
                order_cond=f[b + tr.N_ORDER_COND],
                symbol=f[b + tr.N_SYMBOL],
                qty=_int_or_zero(f[b + tr.N_QTY]),
                price=_int_or_zero(f[b + tr.N_PRICE]),
                time=hhmmss,
                ts=kst_to_utc(session_date, hhmmss),
                trade_date=session_date,
                refused=f[b + tr.N_REFUSED],
                is_fill=f[b + tr.N_FILLED] == "2",
                accepted=f[b + tr.N_ACCEPTED],
                branch_no=f[b + tr.N_BRANCH],
                order_qty=_int_or_zero(f[b + tr.N_ORDER_QTY]),
                account_name=f[b + tr.N_ACCOUNT_NAME],
                symbol_name=f[b + tr.N_SYMBOL_NAME],
                order_price=_int_or_zero(f[b + tr.N_ORDER_PRICE]),
            )
        except _RECORD_ERRORS:
            bad.append(b)
            continue
        out.append(notice)
    return out, bad


# tr_id → (parser, minimum record width)
_PARSERS: dict[str, tuple[_Parser, int]] = {
    tr.TRADE: (_trades, tr.TRADE_WIDTH),
    tr.BOOK: (_books, tr.BOOK_WIDTH),
    tr.NOTICE: (_notices, tr.NOTICE_WIDTH),
    tr.NOTICE_PAPER: (_notices, tr.NOTICE_WIDTH),
}


def parse_data_frame(
    raw: str | bytes,
    keys: Mapping[str, AesKey] | None = None,
    session_date: str | None = None,
) -> RealtimeFrame:
    """Decode a data frame into records.

    keys: AES key/iv per tr_id, from the subscribe acks (needed for encrypted frames).
    session_date: KST YYYYMMDD for TRs that carry only a time (book, notices); default today.
    """
    try:
        text = raw if isinstance(raw, str) else raw.decode("utf-8")
        head, tr_id, count_text, payload = text.split("|", 3)
        if head != "0" and head != "1":
            raise KisProtocolError(f"bad encryption flag {head!r}", raw)
        entry = _PARSERS.get(tr_id)
        if entry is None:
            raise KisProtocolError(f"unknown TR {tr_id!r}", raw)
        parser, min_width = entry
        if not count_text.isascii() or not count_text.isdigit():
            raise KisProtocolError(f"bad record count {count_text!r}", raw)
        count = int(count_text)
        if count < 1:
            raise KisProtocolError("record count is zero", raw)
        encrypted = head == "1"
        if encrypted:
            key = keys.get(tr_id) if keys else None
            if key is None:
                raise KisProtocolError(f"encrypted {tr_id} frame but no AES key", raw)
            payload = key.decrypt(payload)
        fields = payload.split("^")
        width, rest = divmod(len(fields), count)
        if rest or width < min_width:
            raise KisProtocolError(
                f"{tr_id}: {len(fields)} fields do not make {count} records of ≥{min_width}", raw
            )
        records, bad = parser(fields, count, width, session_date or kst_today())
        rejected = tuple("^".join(fields[b : b + width]) for b in bad)
        if not records:
            raise KisProtocolError(f"{tr_id}: no record of the frame decodes", raw)
    except KisProtocolError:
        raise
    except (ValueError, IndexError, TypeError, OverflowError) as exc:
        # int()/float() on non-numbers, bad dates, base64, padding, UTF-8, key sizes.
        raise KisProtocolError(f"malformed data frame: {exc}", raw) from exc
    return RealtimeFrame(tr_id, encrypted, tuple(records), text, rejected)


def decode(
    raw: str | bytes,
    keys: Mapping[str, AesKey] | None = None,
    session_date: str | None = None,
) -> RealtimeFrame | Ack | PingPong:
    """Classify and decode any server text frame."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KisProtocolError("frame is not UTF-8", raw) from exc
    if classify_frame(raw) is FrameKind.DATA:
        return parse_data_frame(raw, keys, session_date)
    return parse_control(raw)


# -- encoding (simulator and tests) -----------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:.2f}"


def encode_trade(t: Trade, width: int = tr.TRADE_WIDTH) -> list[str]:
    """The fields kisray reads; the others are "0" (the simulator fills them in)."""
    f = ["0"] * width
    f[tr.T_SYMBOL] = t.symbol
    f[tr.T_TIME] = t.time
    f[tr.T_PRICE] = str(t.price)
    f[tr.T_SIGN] = t.change_sign
    f[tr.T_CHANGE] = str(t.change)
    f[tr.T_CHANGE_RATE] = _rate(t.change_rate)
    f[tr.T_VWAP] = _rate(t.vwap)
    f[tr.T_OPEN] = str(t.open)
    f[tr.T_HIGH] = str(t.high)
    f[tr.T_LOW] = str(t.low)
    f[tr.T_ASK1] = str(t.ask1)
    f[tr.T_BID1] = str(t.bid1)
    f[tr.T_VOLUME] = str(t.volume)
    f[tr.T_CUM_VOLUME] = str(t.cum_volume)
    f[tr.T_CUM_VALUE] = str(t.cum_value)
    f[tr.T_STRENGTH] = _rate(t.strength)
    f[tr.T_SIDE] = t.side
    f[tr.T_DATE] = t.trade_date
    f[tr.T_MARKET_PHASE] = t.market_phase
    f[tr.T_HALTED] = "Y" if t.halted else "N"
    f[tr.T_HOUR_CLS] = t.hour_cls
    return f


def encode_book(b: BookSnapshot, width: int = tr.BOOK_WIDTH) -> list[str]:
    """The fields kisray reads; the others are "0" (the simulator fills them in)."""
    f = ["0"] * width
    f[tr.B_SYMBOL] = b.symbol
    f[tr.B_TIME] = b.time
    f[tr.B_HOUR_CLS] = b.hour_cls
    for start, values in (
        (tr.B_ASKS, b.asks),
        (tr.B_BIDS, b.bids),
        (tr.B_ASK_SIZES, b.ask_sizes),
        (tr.B_BID_SIZES, b.bid_sizes),
    ):
        f[start : start + tr.BOOK_LEVELS] = map(str, values)
    f[tr.B_TOTAL_ASK] = str(b.total_ask_size)
    f[tr.B_TOTAL_BID] = str(b.total_bid_size)
    f[tr.B_EXPECTED_PRICE] = str(b.expected_price)
    f[tr.B_EXPECTED_QTY] = str(b.expected_qty)
    f[tr.B_CUM_VOLUME] = str(b.cum_volume)
    return f


def encode_notice(n: ExecutionNotice) -> list[str]:
    f = [""] * tr.NOTICE_WIDTH
    f[tr.N_CUST_ID] = n.customer_id
    f[tr.N_ACCOUNT] = n.account_no
    f[tr.N_ORDER_NO] = n.order_no
    f[tr.N_ORIGINAL_ORDER_NO] = n.original_order_no
    f[tr.N_SIDE] = n.side
    f[tr.N_RCTF] = n.rctf_cls
    f[tr.N_ORDER_KIND] = n.order_kind
    f[tr.N_ORDER_COND] = n.order_cond
    f[tr.N_SYMBOL] = n.symbol
    f[tr.N_QTY] = str(n.qty)
    f[tr.N_PRICE] = str(n.price)
    f[tr.N_TIME] = n.time
    f[tr.N_REFUSED] = n.refused
    f[tr.N_FILLED] = "2" if n.is_fill else "1"
    f[tr.N_ACCEPTED] = n.accepted
    f[tr.N_BRANCH] = n.branch_no
    f[tr.N_ORDER_QTY] = str(n.order_qty)
    f[tr.N_ACCOUNT_NAME] = n.account_name
    f[tr.N_SYMBOL_NAME] = n.symbol_name
    f[tr.N_ORDER_PRICE] = str(n.order_price)
    return f


def build_data_frame(
    tr_id: str, records: Sequence[Sequence[str]], aes_key: AesKey | None = None
) -> str:
    """Join encoded records into one `E|TR|NNN|payload` frame; encrypt when a key is given."""
    if not 1 <= len(records) <= 999:
        raise ValueError("a frame carries 1..999 records")
    payload = "^".join("^".join(r) for r in records)
    if aes_key is not None:
        return f"1|{tr_id}|{len(records):03d}|{aes_key.encrypt(payload)}"
    return f"0|{tr_id}|{len(records):03d}|{payload}"
