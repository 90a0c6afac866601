"""Client → server messages: approval/token request bodies and (un)register frames (§1, §2.1)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from engine.errors import KisProtocolError

APPROVAL_PATH = "/oauth2/Approval"
TOKEN_PATH = "/oauth2/tokenP"

TR_TYPE_REGISTER = "1"
TR_TYPE_UNREGISTER = "2"


def approval_request(app_key: str, app_secret: str) -> dict[str, str]:
    """JSON body for POST /oauth2/Approval. Note the field is `secretkey`, not `appsecret`."""
    return {"grant_type": "client_credentials", "appkey": app_key, "secretkey": app_secret}


def token_request(app_key: str, app_secret: str) -> dict[str, str]:
    """JSON body for POST /oauth2/tokenP (issuance is limited to one per minute)."""
    return {"grant_type": "client_credentials", "appkey": app_key, "appsecret": app_secret}


def registration_message(
    approval_key: str, tr_id: str, tr_key: str, *, register: bool = True, custtype: str = "P"
) -> str:
    """The text frame that registers (tr_type 1) or unregisters (tr_type 2) one (tr_id, tr_key)."""
    return json.dumps(
        {
            "header": {
                "approval_key": approval_key,
                "custtype": custtype,
                "tr_type": TR_TYPE_REGISTER if register else TR_TYPE_UNREGISTER,
                "content-type": "utf-8",
            },
            "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}},
        },
        separators=(",", ":"),
    )


def subscribe_message(approval_key: str, tr_id: str, tr_key: str, custtype: str = "P") -> str:
    return registration_message(approval_key, tr_id, tr_key, register=True, custtype=custtype)


def unsubscribe_message(approval_key: str, tr_id: str, tr_key: str, custtype: str = "P") -> str:
    return registration_message(approval_key, tr_id, tr_key, register=False, custtype=custtype)


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    """A decoded client (un)register frame (the server's view)."""

    approval_key: str
    tr_type: str
    custtype: str
    tr_id: str
    tr_key: str

    @property
    def register(self) -> bool:
        return self.tr_type == TR_TYPE_REGISTER


class RegistrationError(KisProtocolError):
    """A client frame the server rejects; `msg_cd` is the OPSP code to answer with."""

    def __init__(self, message: str, raw: str | bytes | None, msg_cd: str) -> None:
        super().__init__(message, raw)
        self.msg_cd = msg_cd


def parse_registration(raw: str | bytes) -> RegistrationRequest:
    """Server side: decode a register/unregister frame, or raise RegistrationError(msg_cd)."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RegistrationError("invalid json format", raw, "OPSP9999") from exc
    header = obj.get("header") if isinstance(obj, dict) else None
    body = obj.get("body") if isinstance(obj, dict) else None
    inp = body.get("input") if isinstance(body, dict) else None
    if not isinstance(header, dict) or not isinstance(inp, dict):
        raise RegistrationError("header/body/input not found", raw, "OPSP9999")
    fields = {
        "approval_key": header.get("approval_key"),
        "tr_type": header.get("tr_type"),
        "custtype": header.get("custtype"),
        "tr_id": inp.get("tr_id"),
        "tr_key": inp.get("tr_key"),
    }
    missing = [name for name, value in fields.items() if not isinstance(value, str)]
    if missing:
        raise RegistrationError(f"{', '.join(missing)} not found", raw, "OPSP9999")
    req = RegistrationRequest(**fields)  # type: ignore[arg-type]
    if req.tr_type not in (TR_TYPE_REGISTER, TR_TYPE_UNREGISTER):
        raise RegistrationError("invalid tr_type", raw, "OPSP8997")
    if req.custtype not in ("P", "B"):
        raise RegistrationError("invalid custtype", raw, "OPSP8998")
    return req
