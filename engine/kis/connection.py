"""The one KIS WebSocket: approval key, connect, PINGPONG, watchdog, reconnect, resubscribe.

`KisConnection` owns the whole connect → subscribe → read → restart loop of the upstream
(docs/kis-protocol.md §1.2, §2, §4, §6). Pure asyncio, no Ray: the Ray actor wraps it.

Rules it keeps:
- exactly one socket at a time: the old socket is fully closed before a new one is dialled
  (break-before-make); a single task owns the socket for its whole life;
- reconnect with exponential backoff and jitter (base 0.5 s doubling up to 30 s by default),
  reset only after a connection stayed up `stable_after_s`, so a server that accepts and drops
  us at once never sees a tight connect/close loop;
- on reconnect, every wanted registration is sent again in first-interest order, and the
  connection is "connected" only once every one of them is acknowledged;
- the approval key is cached (reissued after `approval_max_age_s`); an OPSP0011 reissues it once
  and retries at once; OPSP8996 (the app key is in use by another session) is never retried
  quickly: a loud log line and `in_use_backoff_s` of quiet;
- silence (no data, ack or PINGPONG) for `silence_timeout_s` means the socket is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from engine.errors import KisProtocolError, UpstreamUnavailableError
from engine.kis.codec import RealtimeFrame, decode
from engine.kis.control import Ack, AckKind, PingPong
from engine.kis.crypto import AesKey
from engine.kis.messages import APPROVAL_PATH, approval_request, registration_message
from engine.kis.registry import Registration
from engine.logs import register_secret

log = logging.getLogger(__name__)


class ConnectionState(StrEnum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"  # dialling and restoring registrations
    CONNECTED = "connected"  # every wanted registration acknowledged
    RECONNECTING = "reconnecting"  # lost; waiting out the backoff
    STOPPED = "stopped"


class UpstreamStatus(StrEnum):
    """What consumers are told (the WebSocket `status` message's `upstream`)."""

    CONNECTED = "connected"
    RECONNECTING = "reconnecting"


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    ws_url: str
    rest_url: str
    app_key: str
    app_secret: str
    custtype: str = "P"
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_jitter: float = 0.2  # ± fraction of each delay
    stable_after_s: float = 10.0  # a connection this old resets the backoff
    silence_timeout_s: float = 30.0  # KIS sends PINGPONG about every 10 s
    ack_timeout_s: float = 10.0  # for the acks of a resubscription
    in_use_backoff_s: float = 60.0  # after OPSP8996
    approval_max_age_s: float = 86_400.0  # KIS approval keys are treated as valid for a day
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    subscribe_pacing_s: float = 0.0  # pause between resubscribe messages (real KIS: 0.05)

    def __repr__(self) -> str:  # keep credentials out of logs and reprs
        return f"ConnectionConfig(ws_url={self.ws_url!r}, rest_url={self.rest_url!r})"


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    state: str
    ws_url: str
    connects: int
    reconnects: int
    disconnects: int
    connect_failures: int
    watchdog_timeouts: int
    in_use_rejections: int
    approval_keys_issued: int
    frames: int
    records: int
    decode_errors: int
    pings: int
    live_registrations: int
    refused: dict[str, str]  # "TR:key" → msg_cd of a registration KIS refused
    last_message_age_s: float | None
    last_error: str | None = None  # why the last socket ended or could not open


class Backoff:
    """Exponential delays with ± jitter: base, 2·base, 4·base … capped at `cap`."""

    def __init__(
        self, base: float, cap: float, jitter: float, rng: random.Random | None = None
    ) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return max(0.0, delay * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self.attempt = 0


class ApprovalKeys:
    """Caches the WebSocket approval key from POST /oauth2/Approval (docs/kis-protocol.md §1.2)."""

    def __init__(self, rest_url: str, app_key: str, app_secret: str, max_age_s: float) -> None:
        self._url = rest_url.rstrip("/") + APPROVAL_PATH
        self._app_key, self._app_secret = app_key, app_secret
        self._max_age_s = max_age_s
        self._key: str | None = None
        self._issued_at = 0.0
        self.issued = 0
        register_secret(app_key)
        register_secret(app_secret)

    async def get(self) -> str:
        if self._key is None or time.monotonic() - self._issued_at > self._max_age_s:
            self._key = await self._issue()
            self._issued_at = time.monotonic()
        return self._key

    def invalidate(self) -> None:
        self._key = None

    async def _issue(self) -> str:
        body = approval_request(self._app_key, self._app_secret)
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                reply = await client.post(self._url, json=body)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(f"approval key request failed: {exc!r}") from None
        if reply.status_code != 200:
            raise UpstreamUnavailableError(f"approval key request failed: HTTP {reply.status_code}")
        try:
            key = reply.json()["approval_key"]
        except (ValueError, KeyError, TypeError):
            raise UpstreamUnavailableError("approval key reply without approval_key") from None
        if not isinstance(key, str) or not key:
            raise UpstreamUnavailableError("approval key reply without approval_key")
        register_secret(key)
        self.issued += 1
        log.info("issued a new KIS approval key")
        return key


class _SessionEnded(Exception):
    """The current socket is finished (closed, silent, or refused); reconnect."""


class _ApprovalRejected(_SessionEnded):
    pass


class _AppKeyInUse(_SessionEnded):
    pass


@dataclass
class _Socket:
    """What KIS keeps per socket: cleared on every reconnect."""

    ws: ClientConnection
    approval_key: str
    sent: set[Registration] = field(default_factory=set)
    live: set[Registration] = field(default_factory=set)
    pending: dict[Registration, asyncio.Future[bool]] = field(default_factory=dict)
    aes_keys: dict[str, AesKey] = field(default_factory=dict)


FrameSink = Callable[[RealtimeFrame], None]
StatusSink = Callable[[UpstreamStatus], None]


class KisConnection:
    """The single upstream socket. `wanted()` is the registration table's upstream list."""

    def __init__(
        self,
        config: ConnectionConfig,
        wanted: Callable[[], Iterable[Registration]],
        on_frame: FrameSink,
        on_status: StatusSink,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._wanted = wanted
        self._on_frame = on_frame
        self._on_status = on_status
        self._rng = rng or random.Random()
        self._backoff = Backoff(
            config.backoff_base_s, config.backoff_max_s, config.backoff_jitter, self._rng
        )
        self._approvals = ApprovalKeys(
            config.rest_url, config.app_key, config.app_secret, config.approval_max_age_s
        )
        self._socket: _Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        self.state = ConnectionState.IDLE
        self._refused: dict[Registration, str] = {}
        self._last_message_at: float | None = None
        self._ever_connected = False
        self._reached = False
        self._announced: UpstreamStatus | None = None
        # counters
        self.connects = 0
        self.reconnects = 0
        self.disconnects = 0
        self.connect_failures = 0
        self.watchdog_timeouts = 0
        self.in_use_rejections = 0
        self.last_error: str | None = None
        self.frames = 0
        self.records = 0
        self.decode_errors = 0
        self.pings = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kis-connection")

    async def stop(self) -> None:
        """Unsubscribe nothing (KIS drops registrations with the session) and close."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.state = ConnectionState.STOPPED

    async def wait_connected(self) -> None:
        """Until every wanted registration is live on a socket (wrap in asyncio.timeout)."""
        await self._connected.wait()

    @property
    def connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    # -- registrations ------------------------------------------------------------------------

    async def subscribe(self, regs: Iterable[Registration]) -> None:
        """Send registrations on the live socket; if there is none, the next connect sends them."""
        sock = self._socket
        if sock is None:
            return
        for reg in regs:
            if reg not in sock.sent:
                await self._send_registration(sock, reg, register=True)

    async def unsubscribe(self, regs: Iterable[Registration]) -> None:
        sock = self._socket
        if sock is None:
            return
        for reg in regs:
            self._refused.pop(reg, None)
            if reg in sock.sent:
                await self._send_registration(sock, reg, register=False)

    async def _send_registration(self, sock: _Socket, reg: Registration, *, register: bool) -> None:
        if register:
            sock.sent.add(reg)
            sock.pending.setdefault(reg, asyncio.get_running_loop().create_future())
        else:
            sock.sent.discard(reg)
            sock.live.discard(reg)
            future = sock.pending.pop(reg, None)
            if future is not None and not future.done():
                future.set_result(False)
        message = registration_message(
            sock.approval_key,
            reg.tr_id,
            reg.tr_key,
            register=register,
            custtype=self.config.custtype,
        )
        with contextlib.suppress(ConnectionClosed):
            await sock.ws.send(message)  # a closed socket is the run loop's business

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> ConnectionStats:
        sock = self._socket
        last = self._last_message_at
        return ConnectionStats(
            state=self.state.value,
            ws_url=self.config.ws_url,
            connects=self.connects,
            reconnects=self.reconnects,
            disconnects=self.disconnects,
            connect_failures=self.connect_failures,
            watchdog_timeouts=self.watchdog_timeouts,
            in_use_rejections=self.in_use_rejections,
            approval_keys_issued=self._approvals.issued,
            frames=self.frames,
            records=self.records,
            decode_errors=self.decode_errors,
            pings=self.pings,
            live_registrations=len(sock.live) if sock else 0,
            refused={str(reg): code for reg, code in self._refused.items()},
            last_message_age_s=None if last is None else round(time.monotonic() - last, 3),
            last_error=self.last_error,
        )

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        reissued = False  # one approval-key reissue per OPSP0011 streak
        while not self._stop.is_set():
            delay: float | None = None
            self._set_state(ConnectionState.CONNECTING)
            try:
                approval_key = await self._approvals.get()
                ws = await connect(
                    self.config.ws_url,
                    ping_interval=None,  # KIS uses PINGPONG text frames, not RFC 6455 pings
                    open_timeout=self.config.open_timeout_s,
                    close_timeout=self.config.close_timeout_s,
                    max_size=1 << 22,
                )
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                self.connect_failures += 1
                self.last_error = f"connect failed: {exc}"
                log.warning("KIS connect to %s failed: %s", self.config.ws_url, exc)
            except UpstreamUnavailableError as exc:
                self.connect_failures += 1
                self.last_error = exc.message
                log.warning("%s", exc.message)
            else:
                opened = time.monotonic()
                self.connects += 1
                if self._ever_connected:
                    self.reconnects += 1
                self._reached = False
                try:
                    await self._session(ws, approval_key)
                except _ApprovalRejected:
                    self.last_error = "approval key refused (OPSP0011)"
                    self._approvals.invalidate()
                    if not reissued:
                        reissued, delay = True, 0.0
                        log.warning("KIS refused the approval key (OPSP0011); reissuing it once")
                    else:
                        log.error("KIS refused a freshly issued approval key (OPSP0011) again")
                except _AppKeyInUse:
                    self.in_use_rejections += 1
                    self.last_error = "the app key is in use by another session (OPSP8996)"
                    delay = self.config.in_use_backoff_s * (1 + self._rng.uniform(0, 0.2))
                    log.error(
                        "KIS says the app key is ALREADY IN USE by another session (OPSP8996): "
                        "another kisray or KIS client holds it. Not retrying for %.0f s.",
                        delay,
                    )
                except _SessionEnded as exc:
                    self.last_error = str(exc)
                    log.warning("KIS socket ended: %s", exc)
                finally:
                    # Break-before-make: this socket is closed before any new one is dialled.
                    await self._close_socket()
                if self._reached:
                    self.disconnects += 1
                    reissued = False
                    if time.monotonic() - opened >= self.config.stable_after_s:
                        self._backoff.reset()
            if self._stop.is_set():
                break
            if delay is None:
                delay = self._backoff.next_delay()
            self._set_state(ConnectionState.RECONNECTING)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _session(self, ws: ClientConnection, approval_key: str) -> None:
        """Run one socket until it ends (always by an exception saying why)."""
        sock = _Socket(ws, approval_key)
        self._socket = sock
        self._last_message_at = time.monotonic()
        reader = asyncio.create_task(self._read(sock), name="kis-reader")
        try:
            await self._resubscribe(sock, reader)
            self._ever_connected = self._reached = True
            self._set_state(ConnectionState.CONNECTED)
            await reader
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, _SessionEnded):
                await reader

    async def _resubscribe(self, sock: _Socket, reader: asyncio.Task[None]) -> None:
        """Send every wanted registration in order; wait for all acks (or the reader's end)."""
        for reg in list(self._wanted()):
            if reg in sock.sent or reg not in set(self._wanted()):
                continue  # already sent by subscribe(), or released meanwhile
            await self._send_registration(sock, reg, register=True)
            if self.config.subscribe_pacing_s:
                await asyncio.sleep(self.config.subscribe_pacing_s)
        acks = [f for f in sock.pending.values() if not f.done()]
        if acks:
            all_acked = asyncio.ensure_future(asyncio.gather(*acks, return_exceptions=True))
            waiting: set[asyncio.Future[Any]] = {reader, all_acked}
            done, _ = await asyncio.wait(
                waiting,
                timeout=self.config.ack_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            all_acked.cancel()
            if not done:
                raise _SessionEnded(f"no acknowledgement within {self.config.ack_timeout_s} s")
        if reader.done():
            reader.result()  # raises why the socket ended
            raise _SessionEnded("socket closed while restoring registrations")

    async def _read(self, sock: _Socket) -> None:
        timeout = self.config.silence_timeout_s
        while True:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                # that races a message, and the reader would then outlive its socket.
                async with asyncio.timeout(timeout):
                    raw = await sock.ws.recv()
            except TimeoutError:
                self.watchdog_timeouts += 1
                raise _SessionEnded(f"no message for {timeout} s (watchdog)") from None
            except ConnectionClosed as exc:
                raise _SessionEnded(f"closed by peer ({exc})") from None
            self._last_message_at = time.monotonic()
            try:
                msg = decode(raw, sock.aes_keys)
            except KisProtocolError as exc:
                self.decode_errors += 1
                log.warning("undecodable KIS frame (%s): %.200r", exc.message, exc.raw)
                continue
            if isinstance(msg, RealtimeFrame):
                if msg.rejected:
                    # Counted, and kept whole in the DEBUG log; the frame's good records go on.
                    self.decode_errors += len(msg.rejected)
                    log.warning(
                        "%d undecodable record(s) in a %s frame", len(msg.rejected), msg.tr_id
                    )
                    for record in msg.rejected:
                        log.debug("undecodable %s record: %s", msg.tr_id, record)
                self.frames += 1
                self.records += len(msg.records)
                self._on_frame(msg)
            elif isinstance(msg, PingPong):
                self.pings += 1
                with contextlib.suppress(ConnectionClosed):
                    await sock.ws.send(msg.raw)  # echo it verbatim as text
            else:
                self._on_ack(sock, msg)

    def _on_ack(self, sock: _Socket, ack: Ack) -> None:
        reg = Registration(ack.tr_id, ack.tr_key)
        if ack.kind is AckKind.APPKEY_IN_USE:
            raise _AppKeyInUse("OPSP8996 ALREADY IN USE appkey")
        if ack.kind is AckKind.INVALID_APPROVAL:
            raise _ApprovalRejected("OPSP0011 invalid approval key")
        future = sock.pending.pop(reg, None)
        if ack.registered:
            if ack.aes_key is not None:
                sock.aes_keys[ack.tr_id] = ack.aes_key
            sock.live.add(reg)
            self._refused.pop(reg, None)
        elif ack.kind in (AckKind.UNSUBSCRIBED, AckKind.NOT_SUBSCRIBED):
            sock.live.discard(reg)
        else:
            # Limit reached or an error: KIS refused this registration; keep the socket.
            sock.sent.discard(reg)
            self._refused[reg] = ack.msg_cd
            log.error("KIS refused registration %s: %s %s", reg, ack.msg_cd, ack.msg1)
        if future is not None and not future.done():
            future.set_result(ack.registered)

    async def _close_socket(self) -> None:
        sock, self._socket = self._socket, None
        self._connected.clear()
        if sock is None:
            return
        for future in sock.pending.values():
            if not future.done():
                future.cancel()
        try:
            async with asyncio.timeout(self.config.close_timeout_s + 1):
                await sock.ws.close()
        except (TimeoutError, OSError):
            pass
        finally:
            transport = sock.ws.transport
            if transport is not None and not transport.is_closing():
                transport.abort()

    def _set_state(self, state: ConnectionState) -> None:
        self.state = state
        if state is ConnectionState.CONNECTED:
            self._connected.set()
            log.info("KIS socket connected to %s", self.config.ws_url)
            self._announce(UpstreamStatus.CONNECTED)
        elif state is ConnectionState.RECONNECTING:
            self._announce(UpstreamStatus.RECONNECTING)

    def _announce(self, status: UpstreamStatus) -> None:
        """Tell consumers about changes only: one `reconnecting` per outage, however long."""
        if status is not self._announced:
            self._announced = status
            self._on_status(status)
