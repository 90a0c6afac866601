"""A small KIS REST client for the minute-chart endpoints, within the REST rate limit.

- Access token from POST /oauth2/tokenP (kis-protocol §1.3). KIS issues at most one a minute, so
  it is cached in a 0600 file under the data directory and reused until shortly before expiry.
- A token the server no longer accepts (EGW00121 invalid, EGW00123 expired — e.g. a cached token
  from before a server restart) is dropped from memory and the file, a new one is issued (no
  sooner than a minute after the last) and the call is retried once.
- Every quotation call waits for the client-side rate limiter (20/s real, 2/s paper by default)
  and retries a few times on KIS's own over-limit answer (EGW00201).
- Chart rows come back as `MinuteBar`s (engine.domain.bars), each labelled by its start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.config import Settings
from engine.domain.bars import MinuteBar
from engine.errors import KisProtocolError, UpstreamUnavailableError
from engine.kis.messages import TOKEN_PATH, token_request
from engine.kis.timeconv import kst_to_utc
from engine.logs import register_secret

logger = logging.getLogger(__name__)

TODAY_MINUTES_TR = "FHKST03010200"
PAST_MINUTES_TR = "FHKST03010230"
TODAY_MINUTES_PATH = "/uapi/domestic-stock/v1/quotations/inquire-time-itemchartprice"
PAST_MINUTES_PATH = "/uapi/domestic-stock/v1/quotations/inquire-time-dailychartprice"
TODAY_MINUTES_ROWS = 30  # rows per page, as documented for each chart
PAST_MINUTES_ROWS = 120
OVER_LIMIT = "EGW00201"
# KIS's answers to a token it no longer accepts, in the JSON body's msg_cd whatever the status.
TOKEN_REJECTED = {"EGW00121": "invalid", "EGW00123": "expired"}
TOKEN_INTERVAL_S = 60.0  # KIS issues one token a minute per app key (EGW00133 otherwise)
_TOKEN_LIFETIME_S = 86_400.0  # what KIS advertises; dates cache entries that lack `issued`
# The simulator accepts any non-empty key pair; real and paper need configured ones.
SIM_CREDENTIALS = ("sim-app-key", "sim-app-secret")
_TOKEN_MARGIN_S = 600  # renew this long before KIS says the token expires
_OVER_LIMIT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class ChartPage:
    rows: tuple[MinuteBar, ...]  # newest first, as KIS sends them
    more: bool  # reply header tr_cont M/F: older rows remain
    full: bool = False  # as many rows as a page holds: older rows may remain, tr_cont or not


class RateLimiter:
    """At most `per_second` acquisitions in any sliding one-second window."""

    def __init__(self, per_second: float) -> None:
        self.capacity = max(1, int(per_second))
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._stamps and now - self._stamps[0] >= 1.0:
                    self._stamps.popleft()
                if len(self._stamps) < self.capacity:
                    self._stamps.append(now)
                    return
                # A little past the oldest call's second, so a server counting the same way agrees.
                await asyncio.sleep(1.0 - (now - self._stamps[0]) + 0.01)


def default_rate(settings: Settings) -> float:
    if settings.kis_rest_rate is not None:
        return settings.kis_rest_rate
    return 2.0 if settings.kis_env == "paper" else 20.0


def repair_rate(settings: Settings) -> float:
    """The recorder's share of the REST rate for minute repairs: a quarter (at least one call a
    second), so a `kisray backfill` on the same app key keeps the rest of the budget."""
    if settings.recorder_repair_rate is not None:
        return settings.recorder_repair_rate
    return max(1.0, default_rate(settings) / 4)


def credentials(settings: Settings) -> tuple[str, str]:
    key, secret = settings.kis_app_key, settings.kis_app_secret
    if key is not None and secret is not None:
        return key.get_secret_value(), secret.get_secret_value()
    if settings.kis_env == "sim":
        return SIM_CREDENTIALS
    raise UpstreamUnavailableError(
        "KISRAY_KIS_APP_KEY and KISRAY_KIS_APP_SECRET are needed for the KIS REST API"
    )


class KisRestClient:
    """Minute charts from one KIS REST host. Use as `async with KisRestClient(...) as kis:`."""

    def __init__(
        self,
        rest_url: str,
        app_key: str,
        app_secret: str,
        *,
        rate_per_s: float = 20.0,
        token_cache: Path | None = None,
        timeout_s: float = 10.0,
        token_interval_s: float = TOKEN_INTERVAL_S,
    ) -> None:
        register_secret(app_key)
        register_secret(app_secret)
        self._rest_url = rest_url.rstrip("/")
        self._app_key, self._app_secret = app_key, app_secret
        self._http = httpx.AsyncClient(base_url=self._rest_url, timeout=timeout_s)
        self.limiter = RateLimiter(rate_per_s)
        self._token_cache = token_cache
        self._token: tuple[str, float] | None = None  # (token, epoch expiry)
        self._issued: float | None = None  # epoch of the newest token issue known (memory or file)
        self._token_interval_s = token_interval_s
        self._token_lock = asyncio.Lock()  # one issue at a time, however many calls fail at once
        self.calls = 0

    @classmethod
    def from_settings(cls, settings: Settings, **options: object) -> KisRestClient:
        key, secret = credentials(settings)
        options.setdefault("rate_per_s", default_rate(settings))
        options.setdefault("token_cache", settings.data_dir / "kis-token.json")
        return cls(settings.rest_url, key, secret, **options)  # type: ignore[arg-type]

    async def __aenter__(self) -> KisRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    # -- token ----------------------------------------------------------------------------------

    def _cache_key(self) -> str:
        return hashlib.sha256(f"{self._rest_url}|{self._app_key}".encode()).hexdigest()[:16]

    def _read_entries(self) -> dict[str, Any]:
        if self._token_cache is None:
            return {}
        try:
            entries = json.loads(self._token_cache.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def _save_entries(self, entries: dict[str, Any]) -> None:
        if self._token_cache is None:
            return
        self._token_cache.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._token_cache, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(entries, out)

    def _read_cached_token(self) -> tuple[str, float] | None:
        """The file's token for this host and key, if still good; notes when it was issued."""
        entry = self._read_entries().get(self._cache_key())
        if not isinstance(entry, dict):
            return None
        try:
            expires = float(entry.get("expires", 0))
            issued = float(entry.get("issued", expires - _TOKEN_LIFETIME_S))
        except (TypeError, ValueError):
            return None
        self._issued = max(self._issued or issued, issued)
        if "token" not in entry or expires - _TOKEN_MARGIN_S < time.time():
            return None
        return str(entry["token"]), expires

    def _write_cached_token(self, token: str, expires: float, issued: float) -> None:
        entries = self._read_entries()
        entries[self._cache_key()] = {"token": token, "expires": expires, "issued": issued}
        self._save_entries(entries)

    def _drop_cached_token(self, token: str) -> None:
        """Forget `token` in the file, unless another client already replaced it there. The issue
        time stays, so no client on this key asks again within KIS's minute."""
        entries = self._read_entries()
        entry = entries.get(self._cache_key())
        if isinstance(entry, dict) and entry.get("token") == token:
            entries[self._cache_key()] = {"issued": entry.get("issued", self._issued or 0.0)}
            self._save_entries(entries)

    async def token(self) -> str:
        async with self._token_lock:
            if self._token is None or self._token[1] - _TOKEN_MARGIN_S < time.time():
                self._token = self._read_cached_token() or await self._paced_issue()
                register_secret(self._token[0])
            return self._token[0]

    async def _replace_token(self, rejected: str) -> None:
        """The server refused `rejected`: drop it and get another, at most one issue a minute."""
        async with self._token_lock:
            if self._token is not None and self._token[0] != rejected:
                return  # a concurrent call already replaced it
            self._token = None
            cached = self._read_cached_token()
            if cached is not None and cached[0] != rejected:
                self._token = cached  # another process on this app key issued a fresh one
                return
            self._drop_cached_token(rejected)
            self._token = await self._paced_issue()

    async def _paced_issue(self) -> tuple[str, float]:
        # One sleep for the rest of KIS's minute since the last issue, never a polling loop.
        wait = (self._issued or 0.0) + self._token_interval_s - time.time()
        if wait > 0:
            logger.info("KIS access token: waiting %.0f s for the one-a-minute limit", wait)
            await asyncio.sleep(wait)
        return await self._issue_token()

    async def _issue_token(self) -> tuple[str, float]:
        try:
            reply = await self._http.post(
                TOKEN_PATH, json=token_request(self._app_key, self._app_secret)
            )
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(f"KIS token request failed: {exc}") from exc
        body = _json(reply)
        if reply.status_code != 200 or "access_token" not in body:
            code = body.get("error_code") or body.get("msg_cd") or reply.status_code
            raise UpstreamUnavailableError(f"KIS refused the access token request ({code})")
        issued = time.time()
        expires = issued + float(body.get("expires_in", _TOKEN_LIFETIME_S))
        token = str(body["access_token"])
        register_secret(token)
        self._issued = issued
        self._write_cached_token(token, expires, issued)
        return token, expires

    # -- charts ---------------------------------------------------------------------------------

    async def _get(self, path: str, tr_id: str, params: dict[str, str]) -> httpx.Response:
        over_limit, token_replaced = 0, False
        while True:
            token = await self.token()
            headers = {
                "content-type": "application/json; charset=utf-8",
                "authorization": f"Bearer {token}",
                "appkey": self._app_key,
                "appsecret": self._app_secret,
                "tr_id": tr_id,
                "custtype": "P",
            }
            await self.limiter.acquire()
            self.calls += 1
            try:
                reply = await self._http.get(path, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise UpstreamUnavailableError(f"KIS {tr_id} failed: {exc}") from exc
            body = _json(reply)
            code = body.get("msg_cd")
            if code == OVER_LIMIT and over_limit < _OVER_LIMIT_RETRIES:
                over_limit += 1
                logger.info("KIS %s over the rate limit; retrying", tr_id)
                await asyncio.sleep(0.2 * over_limit)
                continue
            if code in TOKEN_REJECTED and not token_replaced:
                # Once only: a fresh token refused too is not a token problem we can fix here.
                token_replaced = True
                logger.warning(
                    "KIS %s: access token %s (%s); issuing a new one and retrying once",
                    tr_id,
                    TOKEN_REJECTED[code],
                    code,
                )
                await self._replace_token(token)
                continue
            if reply.status_code != 200 or body.get("rt_cd") != "0":
                raise UpstreamUnavailableError(
                    f"KIS {tr_id} error {code or reply.status_code}: {body.get('msg1', '')}".strip()
                )
            return reply

    async def today_minutes(self, symbol: str, hour: str) -> ChartPage:
        """FHKST03010200: today's bars at or before `hour` (HHMMSS), ≤ 30 rows, newest first."""
        reply = await self._get(
            TODAY_MINUTES_PATH,
            TODAY_MINUTES_TR,
            {
                "FID_ETC_CLS_CODE": "",
                "FID_COND_MRKT_DIV_CODE": "J",
                "FID_INPUT_ISCD": symbol,
                "FID_INPUT_HOUR_1": hour,
                "FID_PW_DATA_INCU_YN": "Y",
            },
        )
        return _page(symbol, reply, TODAY_MINUTES_ROWS)

    async def past_minutes(self, symbol: str, day: str, hour: str) -> ChartPage:
        """FHKST03010230: bars at or before (`day`, `hour`), ≤ 120 rows, newest first."""
        reply = await self._get(
            PAST_MINUTES_PATH,
            PAST_MINUTES_TR,
            {
                "FID_COND_MRKT_DIV_CODE": "J",
                "FID_INPUT_ISCD": symbol,
                "FID_INPUT_HOUR_1": hour,
                "FID_INPUT_DATE_1": day,
                "FID_PW_DATA_INCU_YN": "Y",
                "FID_FAKE_TICK_INCU_YN": "",
            },
        )
        return _page(symbol, reply, PAST_MINUTES_ROWS)


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _page(symbol: str, reply: httpx.Response, page_rows: int) -> ChartPage:
    body = _json(reply)
    rows: list[MinuteBar] = []
    for raw in body.get("output2") or []:
        if not raw or not raw.get("stck_bsop_date"):
            continue  # KIS pads empty pages with blank rows
        try:
            day, hour = raw["stck_bsop_date"], raw["stck_cntg_hour"]
            rows.append(
                MinuteBar(
                    symbol,
                    kst_to_utc(day, hour[:4] + "00"),
                    int(raw["stck_oprc"]),
                    int(raw["stck_hgpr"]),
                    int(raw["stck_lwpr"]),
                    int(raw["stck_prpr"]),
                    int(raw["cntg_vol"]),
                )
            )
        except (KeyError, ValueError) as exc:
            raise KisProtocolError(f"unreadable minute-chart row: {exc}", json.dumps(raw)) from exc
    more = reply.headers.get("tr_cont", "") in ("M", "F")
    return ChartPage(tuple(rows), more, len(rows) >= page_rows)
