"""Typed, immutable real-time records decoded from KIS data frames.

NamedTuples rather than frozen dataclasses: they are just as immutable and picklable but
about 6x cheaper to construct, which is what keeps the decoder above 300k records/s.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class Trade(NamedTuple):
    """One H0STCNT0 execution. Prices and quantities are integer won / shares."""

    symbol: str
    ts: datetime  # UTC, from BSOP_DATE + STCK_CNTG_HOUR (KST)
    trade_date: str  # BSOP_DATE, KST trading date YYYYMMDD
    time: str  # STCK_CNTG_HOUR, raw KST HHMMSS
    price: int
    change_sign: str  # PRDY_VRSS_SIGN: 1 up-limit, 2 up, 3 flat, 4 down-limit, 5 down
    change: int  # PRDY_VRSS, signed
    change_rate: float  # PRDY_CTRT, percent, signed
    vwap: float
    open: int
    high: int
    low: int
    ask1: int
    bid1: int
    volume: int  # CNTG_VOL
    cum_volume: int  # ACML_VOL, per symbol per trading day
    cum_value: int  # ACML_TR_PBMN
    strength: float  # CTTR
    side: str  # CCLD_DVSN: 1 buy, 3 pre-open, 5 sell
    market_phase: str  # NEW_MKOP_CLS_CODE
    halted: bool  # TRHT_YN == "Y"
    hour_cls: str  # HOUR_CLS_CODE


class BookSnapshot(NamedTuple):
    """One H0STASP0 record: a full 10-level snapshot, not a diff. Level 1 = best."""

    symbol: str
    ts: datetime  # UTC; the frame has no date, so the KST session date comes from the receiver
    trade_date: str
    time: str  # BSOP_HOUR, raw KST HHMMSS
    hour_cls: str
    asks: tuple[int, ...]
    bids: tuple[int, ...]
    ask_sizes: tuple[int, ...]
    bid_sizes: tuple[int, ...]
    total_ask_size: int
    total_bid_size: int
    expected_price: int  # ANTC_CNPR, auction phases only
    expected_qty: int
    cum_volume: int  # ACML_VOL


class ExecutionNotice(NamedTuple):
    """One decrypted H0STCNI0/H0STCNI9 record (체결통보)."""

    customer_id: str  # CUST_ID = HTS id
    account_no: str
    order_no: str
    original_order_no: str
    side: str  # SELN_BYOV_CLS: 01 sell, 02 buy
    rctf_cls: str
    order_kind: str
    order_cond: str
    symbol: str
    qty: int  # CNTG_QTY (order qty in acceptance notices)
    price: int  # CNTG_UNPR (order price in acceptance notices)
    time: str  # STCK_CNTG_HOUR, raw KST HHMMSS
    ts: datetime  # UTC
    trade_date: str
    refused: str  # RFUS_YN
    is_fill: bool  # CNTG_YN == "2"; "1" = order/modify/cancel/reject acceptance
    accepted: str  # ACPT_YN
    branch_no: str
    order_qty: int
    account_name: str
    symbol_name: str  # CNTG_ISNM40
    order_price: int  # ODER_PRC; in acceptance notices, the fill price


Record = Trade | BookSnapshot | ExecutionNotice
