"""KIS REST endpoints: approval key, access token, minute and daily charts (kis-protocol §1, §7).

Response fields are strings, as KIS sends them; lists are newest first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import date, timedelta

from aiohttp import web

from engine.sim import krx
from engine.sim.market import DayPlan, PlannedMinute, instrument_for
from engine.sim.state import SimState
from engine.sim.ws import STATE

log = logging.getLogger(__name__)

TODAY_MINUTES_TR = "FHKST03010200"
PAST_MINUTES_TR = "FHKST03010230"
DAILY_TR = "FHKST03010100"
TODAY_MINUTES_ROWS = 30
PAST_MINUTES_ROWS = 120
DAILY_ROWS = 100
_TOKEN_REUSE_S = 6 * 3600  # a re-request within 6 h returns the same token


def _fail(status: int, msg_cd: str, msg1: str) -> web.Response:
    return web.json_response({"rt_cd": "1", "msg_cd": msg_cd, "msg1": msg1}, status=status)


async def _json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# -- oauth --------------------------------------------------------------------------------------


async def approval(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json_body(request)
    app_key, secret = body.get("appkey"), body.get("secretkey")
    if body.get("grant_type") != "client_credentials" or not app_key or not secret:
        return web.json_response(
            {"error_description": "유효하지 않은 AppKey입니다.", "error_code": "EGW00103"},
            status=403,
        )
    return web.json_response({"approval_key": state.issue_approval(str(app_key))})


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json_body(request)
    app_key, secret = body.get("appkey"), body.get("appsecret")
    if body.get("grant_type") != "client_credentials" or not app_key or not secret:
        return web.json_response(
            {"error_description": "유효하지 않은 AppKey입니다.", "error_code": "EGW00103"},
            status=403,
        )
    now = time.monotonic()
    last = state.last_token.get(app_key)
    if last is not None and now - last[1] < state.config.token_interval_s:
        return web.json_response(
            {
                "error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
                "error_code": "EGW00133",
            },
            status=403,
        )
    # KIS hands back the same token within 6 h, unless the server retired it (expired, forgotten).
    if (
        last is not None
        and now - last[1] < _TOKEN_REUSE_S
        and last[0] in state.tokens
        and not state.token_expired(last[0])
    ):
        access = last[0]
        state.last_token[app_key] = (access, now)
    else:
        access = state.issue_token(app_key)
    expires = state.clock.kst_wall() + timedelta(days=1)
    return web.json_response(
        {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 86400,
            "access_token_token_expired": expires.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )


def _authorize(state: SimState, request: web.Request, tr_id: str) -> web.Response | None:
    """Checks a quotation call's headers; an error response, or None when allowed."""
    auth = request.headers.get("authorization", "")
    token_ = auth[7:] if auth.lower().startswith("bearer ") else ""
    entry = state.tokens.get(token_)
    if entry is None:
        return _fail(500, "EGW00121", "유효하지 않은 token 입니다.")
    if state.token_expired(token_):
        return _fail(500, "EGW00123", "기간이 만료된 token 입니다.")
    app_key = entry[0]
    if request.headers.get("appkey") != app_key or not request.headers.get("appsecret"):
        return _fail(500, "EGW00103", "유효하지 않은 AppKey입니다.")
    if request.headers.get("tr_id") != tr_id:
        return _fail(500, "SIM00001", f"tr_id header must be {tr_id} for this endpoint")
    calls = state.rest_calls[app_key]
    now = time.monotonic()
    while calls and now - calls[0] >= 1.0:
        calls.popleft()
    if len(calls) >= state.config.rest_rate_per_s:
        return _fail(500, "EGW00201", "초당 거래건수를 초과하였습니다.")
    calls.append(now)
    return None


def _symbol(request: web.Request) -> str | None:
    code = request.query.get("FID_INPUT_ISCD", "")
    return code if len(code) in (6, 7) and code.isalnum() else None


def _hour(text: str, default: int) -> int:
    """FID_INPUT_HOUR_1 HHMMSS → second of day; blank or bad → default."""
    if len(text) == 6 and text.isdigit():
        return int(text[:2]) * 3600 + int(text[2:4]) * 60 + int(text[4:])
    return default


def _date(text: str) -> date | None:
    if len(text) == 8 and text.isdigit():
        try:
            return krx.parse_date(text)
        except ValueError:
            return None
    return None


# -- minute bars --------------------------------------------------------------------------------


def _partial(state: SimState, plan: DayPlan, bar: PlannedMinute, upto: int) -> PlannedMinute | None:
    """The forming bar: the minute's trades up to second `upto`."""
    trades = state.market.trades_between(plan.symbol, plan.date, bar.start_second, upto)
    if not trades:
        return None
    prices = [t.price for t in trades]
    volume = sum(t.volume for t in trades)
    return PlannedMinute(
        bar.minute,
        prices[0],
        max(prices),
        min(prices),
        prices[-1],
        volume,
        volume * (bar.value // bar.volume),
        len(trades),
    )


def _day_rows(
    state: SimState, plan: DayPlan, upto: int, now: int | None
) -> list[tuple[str, PlannedMinute]]:
    """(date, bar) oldest → newest, for bars starting at or before second `upto` (the cursor).

    Every completed minute is whole whatever the cursor's second: only the minute forming at
    `now` (today's simulated second, None for past days) is partial. Until its first trade KIS
    shows that minute with the previous minute's volume (kis-protocol §7.1); we reproduce that.
    `chart_cut_at_cursor` brings back the older shape, each minute cut at the cursor second.
    """
    cut_at_cursor = state.config.chart_cut_at_cursor
    rows: list[tuple[str, PlannedMinute]] = []
    for bar in plan.bars:
        start = bar.start_second
        if start > upto:
            break
        if cut_at_cursor:
            cut = upto
        elif now is not None and start <= now < start + 60:
            cut = now
        else:
            cut = start + 59
        if start + 59 <= cut or bar.minute == krx.CLOSE_MINUTE:
            rows.append((plan.date, bar))
            continue
        part = _partial(state, plan, bar, cut)
        if part is not None:
            rows.append((plan.date, part))
        elif rows:
            prev = rows[-1][1]
            c = prev.close
            rows.append(
                (plan.date, PlannedMinute(bar.minute, c, c, c, c, prev.volume, prev.value, 0))
            )
    return rows


def _continuation(state: SimState, more: bool) -> dict[str, str]:
    # Whether KIS sets tr_cont on the minute charts is unconfirmed (docs/kis-simulator.md).
    return {"tr_cont": "M" if more else "D"} if state.config.chart_tr_cont else {}


def _minute_row(day: str, bar: PlannedMinute) -> dict[str, str]:
    return {
        "stck_bsop_date": day,
        "stck_cntg_hour": krx.hhmmss(bar.start_second),
        "stck_prpr": str(bar.close),
        "stck_oprc": str(bar.open),
        "stck_hgpr": str(bar.high),
        "stck_lwpr": str(bar.low),
        "cntg_vol": str(bar.volume),
        "acml_tr_pbmn": str(bar.value),
    }


def _quote_summary(state: SimState, symbol: str) -> dict[str, str]:
    now = state.clock.now()
    plan = state.market.day(symbol, now.date)
    last = state.market.last_trade(symbol, now.date, now.second)
    price = last.price if last else plan.prev_close
    change = price - plan.prev_close
    return {
        "prdy_vrss": str(change),
        "prdy_vrss_sign": "2" if change > 0 else "5" if change < 0 else "3",
        "prdy_ctrt": f"{change / plan.prev_close * 100:.2f}",
        "stck_prdy_clpr": str(plan.prev_close),
        "acml_vol": str(last.cum_volume if last else 0),
        "acml_tr_pbmn": str(last.cum_value if last else 0),
        "hts_kor_isnm": instrument_for(symbol).name,
        "stck_prpr": str(price),
    }


def _history_start(state: SimState) -> date:
    today = krx.parse_date(state.clock.now().date)
    return today - timedelta(days=state.config.history_days)


def _rows_back(
    state: SimState, symbol: str, day: date, upto: int
) -> Iterator[tuple[str, PlannedMinute]]:
    """Minute rows newest first from (day, upto) backwards across trading days."""
    now = state.clock.now()
    start = _history_start(state)
    today = krx.parse_date(now.date)
    if day > today or (day == today and upto > now.second):
        day, upto = today, now.second
    if not krx.is_trading_day(day):
        day, upto = krx.previous_trading_day(day), krx.CLOSE_SECOND
    while day >= start:
        plan = state.market.day(symbol, krx.fmt_date(day))
        cut = upto if day != today else min(upto, now.second)
        if day == today and not now.is_open:
            cut = -1
        live = now.second if day == today else None
        yield from reversed(_day_rows(state, plan, cut, live))
        day, upto = krx.previous_trading_day(day), krx.CLOSE_SECOND


async def today_minutes(request: web.Request) -> web.Response:
    state = request.app[STATE]
    denied = _authorize(state, request, TODAY_MINUTES_TR)
    if denied is not None:
        return denied
    symbol = _symbol(request)
    if symbol is None:
        return _fail(500, "SIM00002", "invalid FID_INPUT_ISCD")
    now = state.clock.now()
    upto = min(_hour(request.query.get("FID_INPUT_HOUR_1", ""), now.second), now.second)
    plan = state.market.day(symbol, now.date)
    rows = list(reversed(_day_rows(state, plan, upto, now.second))) if now.is_open else []
    page, more = rows[:TODAY_MINUTES_ROWS], len(rows) > TODAY_MINUTES_ROWS
    body = {
        "rt_cd": "0",
        "msg_cd": "MCA00000",
        "msg1": "정상처리 되었습니다.",
        "output1": _quote_summary(state, symbol),
        "output2": [_minute_row(d, b) for d, b in page],
    }
    return web.json_response(body, headers=_continuation(state, more))


async def past_minutes(request: web.Request) -> web.Response:
    state = request.app[STATE]
    denied = _authorize(state, request, PAST_MINUTES_TR)
    if denied is not None:
        return denied
    symbol = _symbol(request)
    day = _date(request.query.get("FID_INPUT_DATE_1", ""))
    if symbol is None or day is None:
        return _fail(500, "SIM00002", "invalid FID_INPUT_ISCD or FID_INPUT_DATE_1")
    upto = _hour(request.query.get("FID_INPUT_HOUR_1", ""), krx.CLOSE_SECOND)
    page: list[tuple[str, PlannedMinute]] = []
    rows = _rows_back(state, symbol, day, upto)
    for row in rows:
        page.append(row)
        if len(page) == PAST_MINUTES_ROWS:
            break
    more = next(rows, None) is not None
    body = {
        "rt_cd": "0",
        "msg_cd": "MCA00000",
        "msg1": "정상처리 되었습니다.",
        "output1": _quote_summary(state, symbol),
        "output2": [_minute_row(d, b) for d, b in page],
    }
    return web.json_response(body, headers=_continuation(state, more))


# -- daily bars ---------------------------------------------------------------------------------


def _period_key(d: date, period: str) -> tuple[int, ...]:
    if period == "W":
        return d.isocalendar()[:2]
    if period == "M":
        return (d.year, d.month)
    if period == "Y":
        return (d.year,)
    return (d.toordinal(),)


async def daily(request: web.Request) -> web.Response:
    state = request.app[STATE]
    denied = _authorize(state, request, DAILY_TR)
    if denied is not None:
        return denied
    symbol = _symbol(request)
    first = _date(request.query.get("FID_INPUT_DATE_1", ""))
    last = _date(request.query.get("FID_INPUT_DATE_2", ""))
    period = request.query.get("FID_PERIOD_DIV_CODE", "D")
    if symbol is None or first is None or last is None or period not in ("D", "W", "M", "Y"):
        return _fail(500, "SIM00002", "invalid FID_INPUT_ISCD, dates or FID_PERIOD_DIV_CODE")
    now = state.clock.now()
    today = krx.parse_date(now.date)
    last = min(last, today)
    first = max(first, _history_start(state))
    groups: dict[tuple[int, ...], list[tuple[date, dict[str, int]]]] = {}
    d = last
    while d >= first and len(groups) <= DAILY_ROWS:
        if krx.is_trading_day(d):
            groups.setdefault(_period_key(d, period), []).append((d, _day_values(state, symbol, d)))
        d -= timedelta(days=1)
    rows = []
    for days in list(groups.values())[:DAILY_ROWS]:
        days.sort()
        vals = [v for _, v in days if v["volume"] > 0] or [days[-1][1]]
        close, prev_close = vals[-1]["close"], vals[0]["prev_close"]
        change = close - prev_close
        rows.append(
            {
                "stck_bsop_date": krx.fmt_date(days[-1][0]),
                "stck_clpr": str(close),
                "stck_oprc": str(vals[0]["open"]),
                "stck_hgpr": str(max(v["high"] for v in vals)),
                "stck_lwpr": str(min(v["low"] for v in vals)),
                "acml_vol": str(sum(v["volume"] for v in vals)),
                "acml_tr_pbmn": str(sum(v["value"] for v in vals)),
                "flng_cls_code": "00",
                "prtt_rate": "0.00",
                "mod_yn": "N",
                "prdy_vrss_sign": "2" if change > 0 else "5" if change < 0 else "3",
                "prdy_vrss": str(change),
                "revl_issu_reas": "",
            }
        )
    summary = _quote_summary(state, symbol)
    plan = state.market.day(symbol, now.date)
    summary.update(
        {
            "stck_shrn_iscd": symbol,
            "stck_oprc": str(plan.open),
            "stck_mxpr": str(krx.snap(plan.prev_close * 1.3)),
            "stck_llam": str(krx.snap(plan.prev_close * 0.7)),
            "prdy_vol": str(state.market.day(symbol, _prev(now.date)).volume),
        }
    )
    body = {
        "rt_cd": "0",
        "msg_cd": "MCA00000",
        "msg1": "정상처리 되었습니다.",
        "output1": summary,
        "output2": rows,
    }
    return web.json_response(body)


def _prev(day: str) -> str:
    return krx.fmt_date(krx.previous_trading_day(krx.parse_date(day)))


def _day_values(state: SimState, symbol: str, d: date) -> dict[str, int]:
    """OHLCV of one day; today's is partial up to the simulated now."""
    plan = state.market.day(symbol, krx.fmt_date(d))
    now = state.clock.now()
    values = {
        "open": plan.open,
        "high": plan.high,
        "low": plan.low,
        "close": plan.close,
        "volume": plan.volume,
        "value": plan.value,
        "prev_close": plan.prev_close,
    }
    if krx.fmt_date(d) == now.date:
        last = state.market.last_trade(symbol, now.date, now.second) if now.is_open else None
        if last is None:
            c = plan.prev_close
            values.update(open=c, high=c, low=c, close=c, volume=0, value=0)
        else:
            values.update(
                high=last.high,
                low=last.low,
                close=last.price,
                volume=last.cum_volume,
                value=last.cum_value,
            )
    return values
