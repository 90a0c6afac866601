"""KIS Open API wire protocol: pure, Ray-free codec (see docs/kis-protocol.md).

Typical socket-owner use:
    body = approval_request(app_key, app_secret)      # POST /oauth2/Approval → approval_key
    ws.send(subscribe_message(approval_key, TRADE, "005930"))
    msg = decode(text, keys)                           # RealtimeFrame | Ack | PingPong
    if isinstance(msg, PingPong): ws.send(msg.raw)     # echo the heartbeat
    if isinstance(msg, Ack) and msg.aes_key: keys[msg.tr_id] = msg.aes_key
"""

from engine.kis.codec import (
    FrameKind,
    RealtimeFrame,
    build_data_frame,
    classify_frame,
    decode,
    encode_book,
    encode_notice,
    encode_trade,
    parse_data_frame,
)
from engine.kis.control import (
    ACK_CODES,
    Ack,
    AckKind,
    PingPong,
    build_ack,
    build_pingpong,
    is_pingpong,
    parse_control,
)
from engine.kis.crypto import AesKey
from engine.kis.messages import (
    APPROVAL_PATH,
    TOKEN_PATH,
    RegistrationError,
    RegistrationRequest,
    approval_request,
    parse_registration,
    registration_message,
    subscribe_message,
    token_request,
    unsubscribe_message,
)
from engine.kis.records import BookSnapshot, ExecutionNotice, Record, Trade
from engine.kis.timeconv import kst_to_utc, kst_today
from engine.kis.tr import BOOK, NOTICE, NOTICE_PAPER, PINGPONG, TRADE

__all__ = [
    "ACK_CODES",
    "APPROVAL_PATH",
    "BOOK",
    "NOTICE",
    "NOTICE_PAPER",
    "PINGPONG",
    "TOKEN_PATH",
    "TRADE",
    "Ack",
    "AckKind",
    "AesKey",
    "BookSnapshot",
    "ExecutionNotice",
    "FrameKind",
    "PingPong",
    "RealtimeFrame",
    "Record",
    "RegistrationError",
    "RegistrationRequest",
    "Trade",
    "approval_request",
    "build_ack",
    "build_data_frame",
    "build_pingpong",
    "classify_frame",
    "decode",
    "encode_book",
    "encode_notice",
    "encode_trade",
    "is_pingpong",
    "kst_to_utc",
    "kst_today",
    "parse_control",
    "parse_data_frame",
    "parse_registration",
    "registration_message",
    "subscribe_message",
    "token_request",
    "unsubscribe_message",
]
