"""Property tests of the KIS codec: round trips for every TR, typed errors on corruption."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import KisProtocolError, KisrayError
from engine.kis import (
    BOOK,
    NOTICE,
    NOTICE_PAPER,
    TRADE,
    Ack,
    AckKind,
    AesKey,
    BookSnapshot,
    ExecutionNotice,
    FrameKind,
    PingPong,
    RealtimeFrame,
    Trade,
    build_ack,
    build_data_frame,
    classify_frame,
    decode,
    encode_book,
    encode_notice,
    encode_trade,
    kst_to_utc,
    parse_control,
    parse_data_frame,
    parse_registration,
    subscribe_message,
    unsubscribe_message,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

digits6 = st.from_regex(r"\A[0-9]{6}\Z", fullmatch=True)
dates = st.dates().filter(lambda d: d.year >= 1900).map(lambda d: d.strftime("%Y%m%d"))
times = st.times().map(lambda t: t.strftime("%H%M%S"))
won = st.integers(min_value=0, max_value=10**12)
signed = st.integers(min_value=-(10**9), max_value=10**9)
rate = st.integers(min_value=-100_000, max_value=100_000).map(lambda n: n / 100)
code = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=4)
text = st.text(alphabet=st.characters(blacklist_characters="^|", codec="utf-8"), max_size=12)
SESSION_DATE = "20250312"


@st.composite
def trades(draw: st.DrawFn) -> Trade:
    day, hms = draw(dates), draw(times)
    return Trade(
        draw(digits6),
        kst_to_utc(day, hms),
        day,
        hms,
        draw(won),
        draw(st.sampled_from("12345")),
        draw(signed),
        draw(rate),
        draw(rate),
        draw(won),
        draw(won),
        draw(won),
        draw(won),
        draw(won),
        draw(won),
        draw(won),
        draw(won),
        draw(rate),
        draw(st.sampled_from("135")),
        draw(code),
        draw(st.booleans()),
        draw(code),
    )


@st.composite
def books(draw: st.DrawFn) -> BookSnapshot:
    hms = draw(times)
    levels = st.tuples(*[won] * 10)
    return BookSnapshot(
        draw(digits6),
        kst_to_utc(SESSION_DATE, hms),
        SESSION_DATE,
        hms,
        draw(code),
        draw(levels),
        draw(levels),
        draw(levels),
        draw(levels),
        draw(won),
        draw(won),
        draw(won),
        draw(won),
        draw(won),
    )


@st.composite
def notices(draw: st.DrawFn) -> ExecutionNotice:
    hms = draw(times)
    return ExecutionNotice(
        customer_id=draw(code),
        account_no=draw(text),
        order_no=draw(text),
        original_order_no=draw(text),
        side=draw(st.sampled_from(["01", "02"])),
        rctf_cls=draw(text),
        order_kind=draw(text),
        order_cond=draw(text),
        symbol=draw(digits6),
        qty=draw(won),
        price=draw(won),
        time=hms,
        ts=kst_to_utc(SESSION_DATE, hms),
        trade_date=SESSION_DATE,
        refused=draw(text),
        is_fill=draw(st.booleans()),
        accepted=draw(text),
        branch_no=draw(text),
        order_qty=draw(won),
        account_name=draw(text),
        symbol_name=draw(text),
        order_price=draw(won),
    )


aes_keys = st.builds(
    AesKey,
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=32, max_size=32),
    iv=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
)


@FAST
@given(st.lists(trades(), min_size=1, max_size=12))
def test_trade_frames_round_trip(records: list[Trade]) -> None:
    frame = build_data_frame(TRADE, [encode_trade(t) for t in records])
    decoded = parse_data_frame(frame)
    assert decoded.tr_id == TRADE and not decoded.encrypted
    assert list(decoded.records) == records


@FAST
@given(st.lists(books(), min_size=1, max_size=6), st.booleans())
def test_book_frames_round_trip_at_both_widths(records: list[BookSnapshot], wide: bool) -> None:
    frame = build_data_frame(BOOK, [encode_book(b, 62 if wide else 59) for b in records])
    assert list(parse_data_frame(frame, session_date=SESSION_DATE).records) == records


@FAST
@given(
    st.lists(notices(), min_size=1, max_size=3), aes_keys, st.sampled_from([NOTICE, NOTICE_PAPER])
)
def test_encrypted_notices_round_trip(records: list, key: AesKey, tr_id: str) -> None:
    frame = build_data_frame(tr_id, [encode_notice(n) for n in records], aes_key=key)
    assert frame.startswith(f"1|{tr_id}|")
    decoded = parse_data_frame(frame, {tr_id: key}, session_date=SESSION_DATE)
    assert decoded.encrypted and list(decoded.records) == records


@FAST
@given(st.lists(trades(), min_size=1, max_size=5), st.integers(min_value=1, max_value=5))
def test_appended_fields_do_not_break_parsing(records: list[Trade], extra: int) -> None:
    widened = [encode_trade(t) + ["X"] * extra for t in records]
    assert list(parse_data_frame(build_data_frame(TRADE, widened)).records) == records


@FAST
@given(digits6, st.text(min_size=1, max_size=40), st.sampled_from([TRADE, BOOK, NOTICE]))
def test_registration_messages_round_trip(tr_key: str, approval: str, tr_id: str) -> None:
    sub = parse_registration(subscribe_message(approval, tr_id, tr_key))
    unsub = parse_registration(unsubscribe_message(approval, tr_id, tr_key))
    assert (sub.approval_key, sub.tr_id, sub.tr_key, sub.register) == (
        approval,
        tr_id,
        tr_key,
        True,
    )
    assert (unsub.tr_type, unsub.register) == ("2", False)


@FAST
@given(st.sampled_from(sorted(["OPSP0000", "OPSP0001", "OPSP0002", "OPSP0008", "OPSP8996"])))
def test_acks_round_trip(msg_cd: str) -> None:
    key = AesKey("a" * 32, "b" * 16)
    ack = parse_control(build_ack(TRADE, "005930", msg_cd, aes_key=key))
    assert isinstance(ack, Ack) and ack.msg_cd == msg_cd and ack.aes_key == key
    assert ack.ok == (msg_cd in ("OPSP0000", "OPSP0001"))


def test_ack_kinds_and_pingpong() -> None:
    assert parse_control(build_ack(TRADE, "005930", "OPSP0002")).registered
    assert parse_control(build_ack("(null)", "", "OPSP8996")).kind is AckKind.APPKEY_IN_USE
    ping = decode('{"header":{"tr_id":"PINGPONG","datetime":"20250312100000"}}')
    assert isinstance(ping, PingPong) and ping.datetime == "20250312100000"
    captured = (
        '{"header":{"tr_id":"H0STASP0","tr_key":"066570","encrypt":"N"},"body":{"rt_cd":"0",'
        '"msg_cd":"OPSP0000","msg1":"SUBSCRIBE SUCCESS","output":{"iv":"ca513e8bf725c575",'
        '"key":"uvbpznjqabrxhowcftgehxghhhsxtwro"}}}'
    )
    ack = decode(captured)
    assert isinstance(ack, Ack) and ack.kind is AckKind.SUBSCRIBED and ack.aes_key is not None
    assert classify_frame("0|H0STCNT0|001|x") is FrameKind.DATA
    assert classify_frame("{") is FrameKind.CONTROL


def test_kst_is_converted_to_utc_and_raw_fields_kept() -> None:
    t = Trade(*([None] * len(Trade._fields)))  # type: ignore[arg-type]
    fields = encode_trade(
        t._replace(
            symbol="005930", time="090000", trade_date="20250312", price=71000, change_sign="2",
            change=-4500, change_rate=-1.25, vwap=0.0, open=1, high=1, low=1, ask1=1, bid1=1,
            volume=10, cum_volume=10, cum_value=710000, strength=0.0, side="1",
            market_phase="20", halted=False, hour_cls="0",
        )
    )  # fmt: skip
    rec = parse_data_frame(build_data_frame(TRADE, [fields])).records[0]
    assert rec.ts.isoformat() == "2025-03-12T00:00:00+00:00"
    assert (rec.trade_date, rec.time, rec.change, rec.change_rate) == (
        "20250312",
        "090000",
        -4500,
        -1.25,
    )


# -- corruption never raises anything but the typed error -------------------------------------

_KEY = AesKey("k" * 32, "0123456789abcdef")


def _valid_frames() -> list[str]:
    t = Trade("005930", kst_to_utc("20250312", "093001"), "20250312", "093001", 71000, "2", 500,
              0.71, 70950.5, 70500, 71200, 70400, 71100, 71000, 10, 12345, 876543210, 101.5,
              "1", "20", False, "0")  # fmt: skip
    b = BookSnapshot("005930", kst_to_utc(SESSION_DATE, "093001"), SESSION_DATE, "093001", "0",
                     tuple(range(10)), tuple(range(10)), tuple(range(10)), tuple(range(10)),
                     1, 2, 3, 4, 5)  # fmt: skip
    n = ExecutionNotice("hts", "1", "2", "", "02", "0", "00", "0", "005930", 1, 2, "093001",
                        kst_to_utc(SESSION_DATE, "093001"), SESSION_DATE, "0", True, "2", "01",
                        1, "n", "s", 2)  # fmt: skip
    return [
        build_data_frame(TRADE, [encode_trade(t)] * 3),
        build_data_frame(BOOK, [encode_book(b, 62)] * 2),
        build_data_frame(NOTICE, [encode_notice(n)], aes_key=_KEY),
        build_ack(TRADE, "005930", "OPSP0000", aes_key=_KEY),
    ]


def _decode_or_typed_error(raw: str | bytes) -> None:
    try:
        result = decode(raw, {NOTICE: _KEY}, session_date=SESSION_DATE)
    except KisProtocolError as exc:
        assert isinstance(exc, KisrayError) and exc.raw is not None
        return
    assert isinstance(result, RealtimeFrame | Ack | PingPong)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(range(4)),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_random_byte_corruption_only_raises_typed_error(which: int, edits: list) -> None:
    data = bytearray(_valid_frames()[which].encode())
    for pos, value in edits:
        data[pos % len(data)] = value
    _decode_or_typed_error(bytes(data))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(range(4)),
    st.integers(min_value=0),
    st.one_of(st.text(max_size=8), st.sampled_from(["", "^", "|", "abc", "-", "1e5", "999"])),
    st.sampled_from(["^", "|"]),
)
def test_field_corruption_only_raises_typed_error(
    which: int, idx: int, value: str, sep: str
) -> None:
    parts = _valid_frames()[which].split(sep)
    parts[idx % len(parts)] = value
    _decode_or_typed_error(sep.join(parts))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(range(3)), st.integers(min_value=0, max_value=10_000))
def test_truncation_only_raises_typed_error(which: int, cut: int) -> None:
    frame = _valid_frames()[which]
    _decode_or_typed_error(frame[: cut % len(frame)])


@pytest.mark.parametrize(
    "frame",
    [
        "0|H0STCNT0|002|" + "^".join(["1"] * 46),  # count says 2, one record sent
        "0|H0STCNT0|001|" + "^".join(["x"] * 46),  # non-numeric
        "0|H9XXXXX0|001|a^b",  # unknown TR
        "1|H0STCNI0|001|not base64!!",  # bad base64
        "1|H0STCNI0|001|AAAAAAAAAAAAAAAAAAAAAA==",  # bad padding
        "1|H0STCNT0|001|abc",  # encrypted without a key
        "0|H0STCNT0|000|",  # zero records
        "2|H0STCNT0|001|x",
        "hello",
        "{not json",
        '{"header": {"tr_id": "H0STCNT0"}}',  # ack without body
    ],
)
def test_malformed_examples_raise_typed_error(frame: str) -> None:
    with pytest.raises(KisProtocolError) as info:
        decode(frame, {NOTICE: _KEY})
    assert info.value.raw == frame


def test_cached_price_ladders_still_reject_bad_levels() -> None:
    good = _valid_frames()[1]
    first = parse_data_frame(good, session_date=SESSION_DATE).records
    assert parse_data_frame(good, session_date=SESSION_DATE).records == first  # cache hit
    parts = good.split("^")
    parts[5] = "2x"  # an ask price in the first record
    decoded = parse_data_frame("^".join(parts), session_date=SESSION_DATE)
    assert decoded.records == first[1:] and len(decoded.rejected) == 1
    assert decoded.rejected[0].split("^")[5] == "2x"


# -- gaps found by running captured frames through the codec ----------------------------------

# A heartbeat that carries a body, as captured in mgh3326/go-kis
# internal/testutil/fixtures/ws-pingpong.json.
PINGPONG_WITH_BODY = (
    '{"header":{"tr_id":"PINGPONG"},"body":{"rt_cd":"0","msg_cd":"MCA00000","msg1":"PING",'
    '"output":{}}}'
)


@pytest.mark.parametrize(
    "raw",
    [
        PINGPONG_WITH_BODY,
        '{"header":{"tr_id":"PINGPONG","datetime":"20250312100000"},"body":{"output":{}}}',
        '{"header":{"tr_id":"PINGPONG","datetime":"20250312100000"},"body":{}}',
        '{"header":{"tr_id":"PINGPONG"},"body":null}',
    ],
)
def test_every_pingpong_variant_is_a_heartbeat(raw: str) -> None:
    msg = decode(raw)
    assert isinstance(msg, PingPong) and msg.raw == raw


def test_one_bad_record_costs_only_itself() -> None:
    t = _valid_frames()[0].split("|", 3)[3].split("^")
    width = len(t) // 3
    records = [t[i * width : (i + 1) * width] for i in range(3)]
    bad = list(records[1])
    bad[2] = "71x00"  # a price that is not a number
    frame = build_data_frame(TRADE, [records[0], bad, records[2]])
    decoded = parse_data_frame(frame)
    good = parse_data_frame(_valid_frames()[0]).records
    assert decoded.records == (good[0], good[2])
    assert decoded.rejected == ("^".join(bad),)
    # A frame whose every record is bad is still a decode error as a whole.
    with pytest.raises(KisProtocolError):
        parse_data_frame(build_data_frame(TRADE, [bad, bad]))
