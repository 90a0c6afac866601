"""Control frames: subscribe acknowledgements and PINGPONG (docs/kis-protocol.md §2.2, §4)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from engine.errors import KisProtocolError
from engine.kis.crypto import AesKey
from engine.kis.tr import PINGPONG


class AckKind(StrEnum):
    """What an acknowledgement means for the registration it answers."""

    SUBSCRIBED = "subscribed"  # OPSP0000
    UNSUBSCRIBED = "unsubscribed"  # OPSP0001 (AES keys go only with the socket)
    ALREADY_SUBSCRIBED = "already_subscribed"  # OPSP0002: treat as registered
    NOT_SUBSCRIBED = "not_subscribed"  # OPSP0003: treat as unregistered
    LIMIT_REACHED = "limit_reached"  # OPSP0008 MAX SUBSCRIBE OVER
    INVALID_APPROVAL = "invalid_approval"  # OPSP0011: reissue the approval key once
    APPKEY_IN_USE = "appkey_in_use"  # OPSP8996: another session owns the app key; never retry
    ERROR = "error"  # anything else with rt_cd != "0"


# msg_cd → (rt_cd, msg1, kind). rt_cd values follow third-party captures (§2.2).
ACK_CODES: dict[str, tuple[str, str, AckKind]] = {
    "OPSP0000": ("0", "SUBSCRIBE SUCCESS", AckKind.SUBSCRIBED),
    "OPSP0001": ("0", "UNSUBSCRIBE SUCCESS", AckKind.UNSUBSCRIBED),
    "OPSP0002": ("1", "ALREADY IN SUBSCRIBE", AckKind.ALREADY_SUBSCRIBED),
    "OPSP0003": ("1", "UNSUBSCRIBE ERROR(not found!)", AckKind.NOT_SUBSCRIBED),
    "OPSP0007": ("1", "SUBSCRIBE INTERNAL ERROR", AckKind.ERROR),
    "OPSP0008": ("1", "MAX SUBSCRIBE OVER", AckKind.LIMIT_REACHED),
    "OPSP0011": ("9", "invalid approval(appkey) : NOT FOUND", AckKind.INVALID_APPROVAL),
    "OPSP8991": ("9", "invalid tr_id", AckKind.ERROR),
    "OPSP8992": ("9", "invalid tr_key", AckKind.ERROR),
    "OPSP8996": ("9", "ALREADY IN USE appkey", AckKind.APPKEY_IN_USE),
    "OPSP8997": ("9", "invalid tr_type", AckKind.ERROR),
    "OPSP8998": ("9", "invalid custtype", AckKind.ERROR),
    "OPSP9999": ("9", "invalid json format", AckKind.ERROR),
}


@dataclass(frozen=True, slots=True)
class Ack:
    """A server acknowledgement of a register/unregister request."""

    tr_id: str
    tr_key: str
    encrypted: bool  # header.encrypt == "Y" (notices)
    rt_cd: str
    msg_cd: str
    msg1: str
    aes_key: AesKey | None  # body.output; optional even on success
    kind: AckKind
    raw: str

    @property
    def ok(self) -> bool:
        return self.rt_cd == "0"

    @property
    def registered(self) -> bool:
        """True when the (tr_id, tr_key) is live on the session after this ack."""
        return self.kind in (AckKind.SUBSCRIBED, AckKind.ALREADY_SUBSCRIBED)


@dataclass(frozen=True, slots=True)
class PingPong:
    """The server heartbeat. Echo `raw` back as a text frame (or as an RFC 6455 pong)."""

    datetime: str | None
    raw: str


def is_pingpong(raw: str) -> bool:
    """Cheap pre-check for the heartbeat before paying for a JSON parse."""
    return raw.startswith("{") and '"PINGPONG"' in raw


def _kind_of(rt_cd: str, msg_cd: str, msg1: str) -> AckKind:
    known = ACK_CODES.get(msg_cd)
    if known is not None:
        return known[2]
    if rt_cd == "0":
        # OTA tells unsubscribe acks apart by msg1.
        return AckKind.UNSUBSCRIBED if msg1.upper().startswith("UNSUB") else AckKind.SUBSCRIBED
    return AckKind.ERROR


def _str(obj: dict[str, object], name: str, raw: str, default: str | None = None) -> str:
    value = obj.get(name, default)
    if not isinstance(value, str):
        raise KisProtocolError(f"control frame: {name} missing or not a string", raw)
    return value


def parse_control(raw: str | bytes) -> Ack | PingPong:
    """Parse a `{`-framed control message into an Ack or a PingPong."""
    try:
        text = raw if isinstance(raw, str) else raw.decode("utf-8")
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise KisProtocolError(f"control frame is not JSON: {exc}", raw) from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("header"), dict):
        raise KisProtocolError("control frame without a header object", raw)
    header = obj["header"]
    tr_id = _str(header, "tr_id", text)
    if tr_id == PINGPONG:
        # Whatever it carries (no body, an empty one, or an MCA00000 reply body as some
        # captures show), a heartbeat is echoed and never read as an acknowledgement.
        stamp = header.get("datetime")
        return PingPong(datetime=stamp if isinstance(stamp, str) else None, raw=text)
    body = obj.get("body")
    if not isinstance(body, dict):
        raise KisProtocolError("ack without a body object", raw)
    rt_cd = _str(body, "rt_cd", text)
    msg_cd = _str(body, "msg_cd", text)
    msg1 = _str(body, "msg1", text, "")
    aes_key = None
    output = body.get("output")
    if isinstance(output, dict) and output.get("key") and output.get("iv"):
        aes_key = AesKey(key=_str(output, "key", text), iv=_str(output, "iv", text))
    return Ack(
        tr_id=tr_id,
        tr_key=_str(header, "tr_key", text, ""),
        encrypted=header.get("encrypt") == "Y",
        rt_cd=rt_cd,
        msg_cd=msg_cd,
        msg1=msg1,
        aes_key=aes_key,
        kind=_kind_of(rt_cd, msg_cd, msg1),
        raw=text,
    )


def build_ack(
    tr_id: str,
    tr_key: str,
    msg_cd: str,
    *,
    aes_key: AesKey | None = None,
    encrypted: bool = False,
) -> str:
    """Server side: the acknowledgement text for `msg_cd` (used by the simulator and tests)."""
    rt_cd, msg1, _ = ACK_CODES[msg_cd]
    body: dict[str, object] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if aes_key is not None:
        body["output"] = {"iv": aes_key.iv, "key": aes_key.key}
    header = {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "Y" if encrypted else "N"}
    return json.dumps({"header": header, "body": body}, separators=(",", ":"))


def build_pingpong(at_kst: datetime) -> str:
    """Server side: the heartbeat frame, stamped with the given KST time."""
    stamp = at_kst.strftime("%Y%m%d%H%M%S")
    return json.dumps({"header": {"tr_id": PINGPONG, "datetime": stamp}}, separators=(",", ":"))
