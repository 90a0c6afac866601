"""A small KIS REST client for the minute-chart endpoints, within the REST rate limit.

- Access token from POST /oauth2/tokenP (kis-protocol §1.3). KIS issues at most one a minute, so
  it is cached in a 0600 file under the data directory and reused until shortly before expiry.
- Every quotation call waits for the client-side rate limiter (20/s real, 2/s paper by default)
  and retries a few times on KIS's own over-limit answer (EGW00201).
- Chart rows come back as `ChartRow` (one 1-minute bar, labelled by its start).
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
from datetime import datetime
from pathlib import Path

import httpx

from engine.config import Settings
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
# The simulator accepts any non-empty key pair; real and paper need configured ones.
SIM_CREDENTIALS = ("sim-app-key", "sim-app-secret")
_TOKEN_MARGIN_S = 600  # renew this long before KIS says the token expires
_OVER_LIMIT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class ChartRow:
    """One row of a minute chart: the bar starting at `ts` (UTC)."""

    trade_date: str  # YYYYMMDD KST
    time: str  # HHMMSS KST, the bar's start
    ts: datetime
    open: int
    high: int
    low: int
    close: int
    volume: int


@dataclass(frozen=True, slots=True)
class ChartPage:
    rows: tuple[ChartRow, ...]  # newest first, as KIS sends them
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
    ) -> None:
        register_secret(app_key)
        register_secret(app_secret)
        self._rest_url = rest_url.rstrip("/")
        self._app_key, self._app_secret = app_key, app_secret
        self._http = httpx.AsyncClient(base_url=self._rest_url, timeout=timeout_s)
        self.limiter = RateLimiter(rate_per_s)
        self._token_cache = token_cache
        self._token: tuple[str, float] | None = None  # (token, epoch expiry)
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

    def _read_cached_token(self) -> tuple[str, float] | None:
        if self._token_cache is None or not self._token_cache.exists():
            return None
        try:
            entry = json.loads(self._token_cache.read_text()).get(self._cache_key())
        except (OSError, ValueError):
            return None
        if not entry or entry.get("expires", 0) - _TOKEN_MARGIN_S < time.time():
            return None
        return entry["token"], float(entry["expires"])

    def _write_cached_token(self, token: str, expires: float) -> None:
        if self._token_cache is None:
            return
        self._token_cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            entries = json.loads(self._token_cache.read_text())
        except (OSError, ValueError):
            entries = {}
        entries[self._cache_key()] = {"token": token, "expires": expires}
        fd = os.open(self._token_cache, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(entries, out)

    async def token(self) -> str:
        if self._token is None or self._token[1] - _TOKEN_MARGIN_S < time.time():
            self._token = self._read_cached_token() or await self._issue_token()
            register_secret(self._token[0])
        return self._token[0]

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
        expires = time.time() + float(body.get("expires_in", 86_400))
        token = str(body["access_token"])
        self._write_cached_token(token, expires)
        return token, expires

    # -- charts ---------------------------------------------------------------------------------

    async def _get(self, path: str, tr_id: str, params: dict[str, str]) -> httpx.Response:
        headers = {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {await self.token()}",
            "appkey": self._app_key,
            "appsecret": self._app_secret,
            "tr_id": tr_id,
            "custtype": "P",
        }
        for attempt in range(_OVER_LIMIT_RETRIES + 1):
            await self.limiter.acquire()
            self.calls += 1
            try:
                reply = await self._http.get(path, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise UpstreamUnavailableError(f"KIS {tr_id} failed: {exc}") from exc
            body = _json(reply)
            if body.get("msg_cd") == OVER_LIMIT and attempt < _OVER_LIMIT_RETRIES:
                logger.info("KIS %s over the rate limit; retrying", tr_id)
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if reply.status_code != 200 or body.get("rt_cd") != "0":
                raise UpstreamUnavailableError(
                    f"KIS {tr_id} error {body.get('msg_cd', reply.status_code)}: "
                    f"{body.get('msg1', '')}".strip()
                )
            return reply
        raise UpstreamUnavailableError(f"KIS {tr_id}: still over the rate limit")  # unreachable

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
        return _page(reply, TODAY_MINUTES_ROWS)

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
        return _page(reply, PAST_MINUTES_ROWS)


def _json(reply: httpx.Response) -> dict:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _page(reply: httpx.Response, page_rows: int) -> ChartPage:
    body = _json(reply)
    rows: list[ChartRow] = []
    for raw in body.get("output2") or []:
        if not raw or not raw.get("stck_bsop_date"):
            continue  # KIS pads empty pages with blank rows
        try:
            day, hour = raw["stck_bsop_date"], raw["stck_cntg_hour"]
            rows.append(
                ChartRow(
                    day,
                    hour,
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
