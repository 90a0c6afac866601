"""The simulator's REST side: tokens, chart paging (docs/kis-protocol.md §7), and REST minute bars
that equal the aggregated live ticks of the same minutes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime
from itertools import pairwise

import httpx
import websockets

from engine.kis import TRADE, RealtimeFrame, decode, subscribe_message, token_request
from engine.sim.rest import DAILY_TR, PAST_MINUTES_TR, TODAY_MINUTES_TR
from engine.sim.server import CHART_BASE

APP_KEY, SECRET = "app-key", "secret"


async def token(client: httpx.AsyncClient) -> str:
    reply = await client.post("/oauth2/tokenP", json=token_request(APP_KEY, SECRET))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86400
    return body["access_token"]


def headers(access: str, tr_id: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {access}",
        "appkey": APP_KEY,
        "appsecret": SECRET,
        "tr_id": tr_id,
        "custtype": "P",
    }


async def today_page(client: httpx.AsyncClient, access: str, hour: str) -> httpx.Response:
    return await client.get(
        f"{CHART_BASE}/inquire-time-itemchartprice",
        params={
            "FID_COND_MRKT_DIV_CODE": "J",
            "FID_INPUT_ISCD": "005930",
            "FID_INPUT_HOUR_1": hour,
            "FID_PW_DATA_INCU_YN": "Y",
            "FID_ETC_CLS_CODE": "",
        },
        headers=headers(access, TODAY_MINUTES_TR),
    )


async def test_token_issuance_is_limited_to_one_per_interval(sim_factory, approval) -> None:
    async with (
        sim_factory(token_interval_s=0.3) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as client,
    ):
        first = await token(client)
        again = await client.post("/oauth2/tokenP", json=token_request(APP_KEY, SECRET))
        assert again.status_code == 403 and again.json()["error_code"] == "EGW00133"
        await asyncio.sleep(0.35)
        assert await token(client) == first  # re-request within 6 h: the same token
        bad = await today_page(client, "wrong", "100000")
        assert bad.json()["rt_cd"] == "1" and bad.json()["msg_cd"] == "EGW00121"


async def test_today_minute_chart_pages_back_to_0900(sim_factory, approval) -> None:
    async with (
        sim_factory(start=datetime(2025, 3, 12, 11, 0, 30), speed=1.0) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as client,
    ):
        access = await token(client)
        hour, rows, pages = "235959", [], 0  # a future time means "now"
        while True:
            reply = await today_page(client, access, hour)
            body = reply.json()
            assert body["rt_cd"] == "0" and len(body["output2"]) <= 30
            rows += body["output2"]
            pages += 1
            if reply.headers["tr_cont"] != "M":
                break
            oldest = body["output2"][-1]["stck_cntg_hour"]
            h, m = int(oldest[:2]), int(oldest[2:4]) - 1
            hour = f"{h + m // 60:02d}{m % 60:02d}00"  # oldest row − 1 minute
        stamps = [r["stck_cntg_hour"] for r in rows]
        assert stamps[0] == "110000" and stamps[-1] == "090000"
        assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == len(stamps) == 121
        assert pages == 5
        assert {r["stck_bsop_date"] for r in rows} == {"20250312"}
        for r in rows:
            assert int(r["stck_lwpr"]) <= min(int(r["stck_oprc"]), int(r["stck_prpr"]))
            assert int(r["stck_hgpr"]) >= max(int(r["stck_oprc"]), int(r["stck_prpr"]))
        assert int(body["output1"]["acml_vol"]) > 0 and body["output1"]["hts_kor_isnm"]


async def test_past_minute_chart_crosses_days_in_pages_of_120(sim_factory, approval) -> None:
    async with sim_factory() as sim, httpx.AsyncClient(base_url=sim.rest_url) as client:
        access = await token(client)
        date, hour, rows = "20250311", "153000", []
        for _ in range(4):
            reply = await client.get(
                f"{CHART_BASE}/inquire-time-dailychartprice",
                params={
                    "FID_COND_MRKT_DIV_CODE": "J",
                    "FID_INPUT_ISCD": "005930",
                    "FID_INPUT_HOUR_1": hour,
                    "FID_INPUT_DATE_1": date,
                    "FID_PW_DATA_INCU_YN": "Y",
                    "FID_FAKE_TICK_INCU_YN": "",
                },
                headers=headers(access, PAST_MINUTES_TR),
            )
            page = reply.json()["output2"]
            assert len(page) == 120 and reply.headers["tr_cont"] == "M"
            rows += page
            date, hour = page[-1]["stck_bsop_date"], page[-1]["stck_cntg_hour"]
            h, m = int(hour[:2]), int(hour[2:4]) - 1
            hour = f"{h + m // 60:02d}{m % 60:02d}00"
        keys = [(r["stck_bsop_date"], r["stck_cntg_hour"]) for r in rows]
        assert keys == sorted(keys, reverse=True) and len(set(keys)) == 480
        assert keys[0] == ("20250311", "153000") and keys[1] == ("20250311", "151900")
        # 381 bars a day (09:00–15:19 and the 15:30 print), then Monday the 10th.
        assert keys[381] == ("20250310", "153000")


async def test_daily_chart_is_consistent_with_minute_bars(sim_factory, approval) -> None:
    async with sim_factory() as sim, httpx.AsyncClient(base_url=sim.rest_url) as client:
        access = await token(client)
        reply = await client.get(
            f"{CHART_BASE}/inquire-daily-itemchartprice",
            params={
                "FID_COND_MRKT_DIV_CODE": "J",
                "FID_INPUT_ISCD": "005930",
                "FID_INPUT_DATE_1": "20240101",
                "FID_INPUT_DATE_2": "20250311",
                "FID_PERIOD_DIV_CODE": "D",
                "FID_ORG_ADJ_PRC": "0",
            },
            headers=headers(access, DAILY_TR),
        )
        days = reply.json()["output2"]
        assert len(days) == 100 and days[0]["stck_bsop_date"] == "20250311"
        assert [d["stck_bsop_date"] for d in days] == sorted(
            (d["stck_bsop_date"] for d in days), reverse=True
        )
        plan = sim.state.market.day("005930", "20250311")
        assert int(days[0]["acml_vol"]) == sum(b.volume for b in plan.bars)
        assert int(days[0]["stck_hgpr"]) == max(b.high for b in plan.bars)
        assert days[0]["stck_clpr"] == str(plan.bars[-1].close)
        assert int(days[1]["stck_clpr"]) == plan.prev_close


async def test_rest_minute_bars_equal_aggregated_live_ticks(sim_factory, approval) -> None:
    async with sim_factory(speed=120) as sim:
        key = await approval(sim.rest_url)
        bars: dict[str, list] = defaultdict(list)
        async with websockets.connect(sim.ws_url, ping_interval=None) as ws:
            await ws.send(subscribe_message(key, TRADE, "005930"))
            while len(bars) < 5:
                msg = decode(await asyncio.wait_for(ws.recv(), 5))
                if isinstance(msg, RealtimeFrame):
                    for t in msg.records:
                        bars[t.time[:4] + "00"].append(t)
        async with httpx.AsyncClient(base_url=sim.rest_url) as client:
            access = await token(client)
            rest = {
                r["stck_cntg_hour"]: r
                for r in (await today_page(client, access, "235959")).json()["output2"]
            }
        complete = sorted(bars)[1:-1]  # the first and last minutes were seen only in part
        assert len(complete) >= 3
        for minute in complete:
            ticks = bars[minute]
            row = rest[minute]
            assert int(row["stck_oprc"]) == ticks[0].price
            assert int(row["stck_prpr"]) == ticks[-1].price
            assert int(row["stck_hgpr"]) == max(t.price for t in ticks)
            assert int(row["stck_lwpr"]) == min(t.price for t in ticks)
            assert int(row["cntg_vol"]) == sum(t.volume for t in ticks)
        # ACML_VOL is cumulative and gap-free within what we saw.
        seen = [t for m in sorted(bars) for t in bars[m]]
        for prev, cur in pairwise(seen):
            assert cur.cum_volume == prev.cum_volume + cur.volume
