"""Conformance: frames captured from live KIS decode field by field against the official column
lists, and the simulator's frames have the same columns with values of the same shape."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

import pytest

from engine.kis import BOOK, TRADE, BookSnapshot, PingPong, Trade, decode, parse_data_frame, tr
from engine.kis.timeconv import kst_to_utc
from engine.sim.config import SimulatorConfig
from engine.sim.feed import book_frames, trade_frames
from engine.sim.market import DEFAULT_SYMBOLS
from engine.sim.state import SimState
from tests.engine.kis_captured import CAPTURED, PINGPONG_WITH_BODY, Captured

# Value shapes per column, read off the captured frames (the test below holds them to it).
_INT, _UINT, _DEC = r"-?\d+", r"\d+", r"-?\d+\.\d{2}"
_TIME, _SIGN, _DATE = r"([01]\d|2[0-3])[0-5]\d[0-5]\d", r"[1-5]", r"\d{8}"
TRADE_SHAPES = {
    "MKSC_SHRN_ISCD": r"[0-9A-Z]{6}", "STCK_CNTG_HOUR": _TIME, "STCK_PRPR": _UINT,
    "PRDY_VRSS_SIGN": _SIGN, "PRDY_VRSS": _INT, "PRDY_CTRT": _DEC, "WGHN_AVRG_STCK_PRC": _DEC,
    "STCK_OPRC": _UINT, "STCK_HGPR": _UINT, "STCK_LWPR": _UINT, "ASKP1": _UINT, "BIDP1": _UINT,
    "CNTG_VOL": _UINT, "ACML_VOL": _UINT, "ACML_TR_PBMN": _UINT, "SELN_CNTG_CSNU": _UINT,
    "SHNU_CNTG_CSNU": _UINT, "NTBY_CNTG_CSNU": _INT, "CTTR": _DEC, "SELN_CNTG_SMTN": _UINT,
    "SHNU_CNTG_SMTN": _UINT, "CCLD_DVSN": r"[135]", "SHNU_RATE": _DEC,
    "PRDY_VOL_VRSS_ACML_VOL_RATE": _DEC, "OPRC_HOUR": _TIME, "OPRC_VRSS_PRPR_SIGN": _SIGN,
    "OPRC_VRSS_PRPR": _INT, "HGPR_HOUR": _TIME, "HGPR_VRSS_PRPR_SIGN": _SIGN,
    "HGPR_VRSS_PRPR": _INT, "LWPR_HOUR": _TIME, "LWPR_VRSS_PRPR_SIGN": _SIGN,
    "LWPR_VRSS_PRPR": _INT, "BSOP_DATE": _DATE, "NEW_MKOP_CLS_CODE": r"\d\d", "TRHT_YN": r"[YN]",
    "ASKP_RSQN1": _UINT, "BIDP_RSQN1": _UINT, "TOTAL_ASKP_RSQN": _UINT, "TOTAL_BIDP_RSQN": _UINT,
    "VOL_TNRT": _DEC, "PRDY_SMNS_HOUR_ACML_VOL": _UINT, "PRDY_SMNS_HOUR_ACML_VOL_RATE": _DEC,
    "HOUR_CLS_CODE": r"[0A-D]", "MRKT_TRTM_CLS_CODE": r"", "VI_STND_PRC": _UINT,
    "field 46": r"\d",
}  # fmt: skip
BOOK_SHAPES = {
    "MKSC_SHRN_ISCD": r"[0-9A-Z]{6}", "BSOP_HOUR": _TIME, "HOUR_CLS_CODE": r"[0A-D]",
    **{c: _UINT for c in tr.BOOK_COLUMNS[3:47]},
    "ANTC_CNPR": _UINT, "ANTC_CNQN": _UINT, "ANTC_VOL": _UINT, "ANTC_CNTG_VRSS": _INT,
    "ANTC_CNTG_VRSS_SIGN": _SIGN, "ANTC_CNTG_PRDY_CTRT": _DEC, "ACML_VOL": _UINT,
    "TOTAL_ASKP_RSQN_ICDC": _INT, "TOTAL_BIDP_RSQN_ICDC": _INT, "OVTM_TOTAL_ASKP_ICDC": _INT,
    "OVTM_TOTAL_BIDP_ICDC": _INT, "STCK_DEAL_CLS_CODE": r"\d",
    "field 59 (mid price)": _UINT, "field 60": _UINT, "field 61": r"\d", "field 62": r"\d",
}  # fmt: skip
TRADE_NAMES = (*tr.TRADE_COLUMNS, "field 46")
BOOK_NAMES = tuple(BOOK_SHAPES)


def records_of(raw: str) -> list[list[str]]:
    _, _, count, payload = raw.split("|", 3)
    fields = payload.split("^")
    width = len(fields) // int(count)
    assert width * int(count) == len(fields)
    return [fields[i : i + width] for i in range(0, len(fields), width)]


def named(record: list[str], names: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(names, record, strict=False))


def check_trade(t: Trade, c: dict[str, str]) -> None:
    assert t.symbol == c["MKSC_SHRN_ISCD"] and t.time == c["STCK_CNTG_HOUR"]
    assert t.trade_date == c["BSOP_DATE"] and t.ts == kst_to_utc(t.trade_date, t.time)
    ints = {
        "price": "STCK_PRPR", "change": "PRDY_VRSS", "open": "STCK_OPRC", "high": "STCK_HGPR",
        "low": "STCK_LWPR", "ask1": "ASKP1", "bid1": "BIDP1", "volume": "CNTG_VOL",
        "cum_volume": "ACML_VOL", "cum_value": "ACML_TR_PBMN",
    }  # fmt: skip
    for attr, column in ints.items():
        assert getattr(t, attr) == int(c[column]), attr
    for attr, column in (("change_rate", "PRDY_CTRT"), ("vwap", "WGHN_AVRG_STCK_PRC")):
        assert getattr(t, attr) == float(c[column]), attr
    assert t.strength == float(c["CTTR"]) and t.side == c["CCLD_DVSN"]
    assert t.change_sign == c["PRDY_VRSS_SIGN"] and t.market_phase == c["NEW_MKOP_CLS_CODE"]
    assert t.halted == (c["TRHT_YN"] == "Y") and t.hour_cls == c["HOUR_CLS_CODE"]


def check_book(b: BookSnapshot, c: dict[str, str]) -> None:
    assert b.symbol == c["MKSC_SHRN_ISCD"] and b.time == c["BSOP_HOUR"]
    assert b.hour_cls == c["HOUR_CLS_CODE"]
    for attr, prefix in (
        ("asks", "ASKP"), ("bids", "BIDP"), ("ask_sizes", "ASKP_RSQN"), ("bid_sizes", "BIDP_RSQN"),
    ):  # fmt: skip
        assert getattr(b, attr) == tuple(int(c[f"{prefix}{i}"]) for i in range(1, 11)), attr
    assert (b.total_ask_size, b.total_bid_size) == (
        int(c["TOTAL_ASKP_RSQN"]),
        int(c["TOTAL_BIDP_RSQN"]),
    )
    assert (b.expected_price, b.expected_qty) == (int(c["ANTC_CNPR"]), int(c["ANTC_CNQN"]))
    assert b.cum_volume == int(c["ACML_VOL"])


def check_frame(raw: str, session_date: str) -> tuple[str, int, int]:
    """Decode one frame and compare every record with its raw columns; (tr_id, width, count)."""
    frame = parse_data_frame(raw, session_date=session_date)
    rows = records_of(raw)
    assert len(frame.records) == len(rows) and frame.rejected == ()
    for record, fields in zip(frame.records, rows, strict=True):
        if frame.tr_id == TRADE:
            check_trade(record, named(fields, TRADE_NAMES))  # type: ignore[arg-type]
        else:
            check_book(record, named(fields, BOOK_NAMES))  # type: ignore[arg-type]
    return frame.tr_id, len(rows[0]), len(rows)


def off_shape(raw: str) -> list[str]:
    """Columns whose value does not look like the live ones."""
    tr_id = raw.split("|")[1]
    names, shapes = (TRADE_NAMES, TRADE_SHAPES) if tr_id == TRADE else (BOOK_NAMES, BOOK_SHAPES)
    return [
        f"{name}={value!r}"
        for fields in records_of(raw)
        for name, value in named(fields, names).items()
        if not re.fullmatch(shapes[name], value)
    ]


# -- captured frames ----------------------------------------------------------------------------


def test_the_captured_set_covers_both_trs_widths_and_batching() -> None:
    kinds = {check_frame(c.raw, c.session_date) for c in CAPTURED}
    assert len(CAPTURED) >= 8
    assert {(t, w) for t, w, _ in kinds} == {(TRADE, 46), (TRADE, 47), (BOOK, 59), (BOOK, 62),
                                            (BOOK, 63)}  # fmt: skip
    assert {n for t, _, n in kinds if t == TRADE} >= {1, 3, 4}


@pytest.mark.parametrize("captured", CAPTURED, ids=lambda c: c.name)
def test_captured_frame_decodes_field_by_field(captured: Captured) -> None:
    check_frame(captured.raw, captured.session_date)
    assert off_shape(captured.raw) == []  # the shapes the simulator is held to are live ones


@pytest.mark.parametrize(
    ("name", "copies"), [("trade47_2026_09", 5), ("trade46_2025_3", 2), ("book63_2026_09", 3),
                         ("book62_2026_06", 2), ("book59_print", 4)],
)  # fmt: skip
def test_synthetic_multi_record_frames_decode_field_by_field(name: str, copies: int) -> None:
    c = next(c for c in CAPTURED if c.name == name)
    head, tr_id, count, payload = c.raw.split("|", 3)
    raw = f"{head}|{tr_id}|{int(count) * copies:03d}|" + "^".join([payload] * copies)
    assert check_frame(raw, c.session_date)[2] == int(count) * copies


def test_a_captured_pingpong_with_a_body_is_a_heartbeat() -> None:
    assert isinstance(decode(PINGPONG_WITH_BODY), PingPong)


# -- the simulator against the same columns ----------------------------------------------------

START = datetime(2025, 3, 12, 10, 0, 0)
DAY, AT = "20250312", 10 * 3600


def sim_frames(seconds: range, **config: object) -> tuple[list[str], list[str]]:
    state = SimState(SimulatorConfig(start=START, **config))  # type: ignore[arg-type]
    trades, books = [], []
    for symbol in DEFAULT_SYMBOLS:
        trades += trade_frames(state, symbol, DAY, seconds.start, seconds.stop - 1)
        for s in seconds:
            books += book_frames(state, symbol, DAY, s, s)
    return trades, books


@pytest.mark.parametrize(
    ("trade_width", "book_width"),
    [(47, 63), (46, 62), (46, 59)],
    ids=["live", "2025", "documented"],
)
def test_simulator_frames_have_live_columns_and_shapes(trade_width: int, book_width: int) -> None:
    trades, books = sim_frames(range(AT, AT + 20), trade_width=trade_width, book_width=book_width)
    assert trades and books
    for raw in trades + books:
        tr_id, width, _ = check_frame(raw, DAY)
        assert width == (trade_width if tr_id == TRADE else book_width)
        assert off_shape(raw) == [], raw


def test_simulator_defaults_are_the_newest_captured_layout() -> None:
    config = SimulatorConfig()
    assert (config.trade_width, config.book_width, config.books_per_frame) == (47, 63, 1)


def test_a_minute_of_trade_frames_mostly_carries_one_record() -> None:
    # 60 simulated seconds of the six default symbols at the default rate, as `kisray sim` at
    # speed 1 sends them; docs/kis-simulator.md quotes this distribution.
    trades, _ = sim_frames(range(AT, AT + 60))
    counts = Counter(int(raw.split("|")[2]) for raw in trades)
    assert counts[1] / sum(counts.values()) > 0.75
    assert max(counts) <= SimulatorConfig().max_batch and max(counts) > 1
    # The opening minute is busier: bigger bursts, still capped.
    opening, _ = sim_frames(range(9 * 3600, 9 * 3600 + 60), max_batch=8)
    assert max(int(raw.split("|")[2]) for raw in opening) <= 8
    packed, _ = sim_frames(range(AT, AT + 60), trade_frames="packed", max_batch=5)
    assert Counter(int(raw.split("|")[2]) for raw in packed).most_common(1)[0][0] == 5
