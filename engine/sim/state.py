"""The simulator's mutable state: issued credentials, sessions, counters, pending faults."""

from __future__ import annotations

import asyncio
import math
import secrets
import string
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field

from aiohttp import web

from engine.kis.crypto import AesKey
from engine.sim.clock import SimClock
from engine.sim.config import SimulatorConfig
from engine.sim.market import SyntheticMarket

_LOWER = string.ascii_lowercase
_HEX = "0123456789abcdef"


def new_aes_key() -> AesKey:
    return AesKey(
        key="".join(secrets.choice(_LOWER) for _ in range(32)),
        iv="".join(secrets.choice(_HEX) for _ in range(16)),
    )


@dataclass(eq=False)
class Session:
    """One WebSocket connection and what KIS would keep for it."""

    id: int
    ws: web.WebSocketResponse
    request: web.Request
    aes_key: AesKey = field(default_factory=new_aes_key)
    app_key: str | None = None  # bound by the first message carrying a valid approval key
    registrations: dict[tuple[str, str], float] = field(default_factory=dict)
    awaiting_echo: bool = False
    echo_deadline: float = 0.0
    stalled_until: float = 0.0
    closed: bool = False

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self.stalled_until

    def abort(self) -> None:
        """Cut the TCP connection without a close frame (how KIS drops sockets)."""
        self.closed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()


@dataclass
class Stats:
    connections_total: int = 0
    rejected_connections: int = 0
    frames_sent: int = 0
    records_sent: int = 0
    pings_sent: int = 0
    echoes_received: int = 0
    dropped_no_echo: int = 0
    approvals_issued: int = 0
    tokens_issued: int = 0
    max_concurrent_connections: int = 0  # peak open sessions for any one app key


class SimState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.clock = SimClock(speed=config.speed, real_hours=config.real_hours, start=config.start)
        self.market = SyntheticMarket(config.seed, config.rate, len(config.symbols))
        self.stats = Stats()
        self.sessions: dict[int, Session] = {}
        self.approvals: dict[str, str] = {}  # approval key → app key
        self.tokens: dict[str, tuple[str, float]] = {}  # access token → (app key, issued)
        self.last_token: dict[str, tuple[str, float]] = {}  # app key → (token, issued)
        self.rest_calls: dict[str, deque[float]] = defaultdict(deque)
        self.owners: dict[str, Session] = {}  # app key → the session holding it
        self.reject_next_http = 0
        self.reject_next_in_use = 0
        self.paused: dict[str, float] = {}  # symbol → monotonic deadline
        self.notice_seq = 0
        self.lock = asyncio.Lock()
        self._ids = 0

    # -- sessions -----------------------------------------------------------------------------

    def open_session(self, ws: web.WebSocketResponse, request: web.Request) -> Session:
        self._ids += 1
        session = Session(self._ids, ws, request)
        self.sessions[session.id] = session
        self.stats.connections_total += 1
        return session

    def close_session(self, session: Session) -> None:
        session.closed = True
        self.sessions.pop(session.id, None)
        if session.app_key and self.owners.get(session.app_key) is session:
            del self.owners[session.app_key]

    def bind(self, session: Session, app_key: str) -> bool:
        """Give the session its app key; False if another open session already holds it."""
        owner = self.owners.get(app_key)
        if owner is not None and owner is not session and not owner.closed:
            return False
        session.app_key = app_key
        self.owners[app_key] = session
        holders = sum(1 for s in self.sessions.values() if s.app_key == app_key and not s.closed)
        self.stats.max_concurrent_connections = max(self.stats.max_concurrent_connections, holders)
        return True

    def subscribers(self, tr_id: str, tr_key: str) -> list[Session]:
        key = (tr_id, tr_key)
        return [s for s in self.sessions.values() if key in s.registrations and not s.closed]

    def registered_keys(self, tr_id: str) -> set[str]:
        return {k for s in self.sessions.values() for (t, k) in s.registrations if t == tr_id}

    def is_paused(self, symbol: str) -> bool:
        deadline = self.paused.get(symbol)
        if deadline is None:
            return False
        if time.monotonic() >= deadline:
            del self.paused[symbol]
            return False
        return True

    # -- credentials --------------------------------------------------------------------------

    def issue_approval(self, app_key: str) -> str:
        approval = str(uuid.uuid4())
        self.approvals[approval] = app_key
        self.stats.approvals_issued += 1
        return approval

    def token_expired(self, token: str) -> bool:
        entry = self.tokens.get(token)
        return entry is not None and time.monotonic() - entry[1] >= self.config.token_lifetime_s

    def expire_tokens(self) -> int:
        """Every issued token is past its lifetime from now on (EGW00123)."""
        for token, (app_key, _) in self.tokens.items():
            self.tokens[token] = (app_key, -math.inf)
        return len(self.tokens)

    def forget_tokens(self) -> int:
        """The server no longer knows any issued token (EGW00121), as after a KIS-side restart.
        `last_token` keeps its issue times: forgetting does not lift the one-a-minute limit."""
        count = len(self.tokens)
        self.tokens.clear()
        return count

    def issue_token(self, app_key: str) -> str:
        token = "sim." + secrets.token_urlsafe(48)
        now = time.monotonic()
        self.tokens[token] = (app_key, now)
        self.last_token[app_key] = (token, now)
        self.stats.tokens_issued += 1
        return token

    # -- sending ------------------------------------------------------------------------------

    async def send(self, session: Session, frame: str, records: int = 0) -> bool:
        if session.closed or session.ws.closed or session.stalled:
            return False
        try:
            await session.ws.send_str(frame)
        except (ConnectionError, RuntimeError):
            session.closed = True
            return False
        self.stats.frames_sent += 1
        self.stats.records_sent += records
        return True

    def snapshot(self) -> dict[str, object]:
        now = self.clock.now()
        return {
            "connections_open": sum(1 for s in self.sessions.values() if not s.closed),
            "connections_total": self.stats.connections_total,
            "rejected_connections": self.stats.rejected_connections,
            "max_concurrent_connections": self.stats.max_concurrent_connections,
            "registrations": sorted(
                (
                    {"session": s.id, "tr_id": t, "tr_key": k}
                    for s in self.sessions.values()
                    for (t, k) in s.registrations
                ),
                key=lambda r: (r["session"], r["tr_id"], r["tr_key"]),
            ),
            "frames_sent": self.stats.frames_sent,
            "records_sent": self.stats.records_sent,
            "pings_sent": self.stats.pings_sent,
            "echoes_received": self.stats.echoes_received,
            "dropped_no_echo": self.stats.dropped_no_echo,
            "approvals_issued": self.stats.approvals_issued,
            "tokens_issued": self.stats.tokens_issued,
            "paused_symbols": sorted(s for s in list(self.paused) if self.is_paused(s)),
            "sim_time": now.kst.isoformat(),
            "market_open": now.is_open,
            "mode": "replay" if self.config.replay_path else "synthetic",
        }
