"""The demo page's Lightweight Charts in Chromium, as a charting frontend uses kisray: `setData`
from /candles, then `update()` from /ws. Collects every console error and script exception."""

from __future__ import annotations

import asyncio

import httpx

from tests.api.browser_support import chromium

BAR_FIELDS = ("time", "open", "high", "low", "close", "volume")


def _bar(candle: dict | None) -> tuple | None:
    return None if candle is None else tuple(candle[k] for k in BAR_FIELDS)


async def _rest_live_bar(client: httpx.AsyncClient, base: str, symbol: str, interval: str):
    reply = await client.get(f"{base}/candles/{symbol}?interval={interval}&limit=1", timeout=10)
    reply.raise_for_status()
    return _bar(reply.json()["candles"][-1])


async def drive_charts(base: str, symbol: str, intervals: list[str], seconds: float) -> dict:
    """One tab per interval for `seconds`; then, per interval, whether the tab's forming bar
    equalled REST's live bar at a moment when REST's did not change around the read."""
    problems: list[str] = []
    result: dict = {"problems": problems, "updates": {}, "equal": {}}
    async with chromium() as context, httpx.AsyncClient() as client:
        pages = {}
        for interval in intervals:
            page = await context.new_page()
            page.on("pageerror", lambda e, i=interval: problems.append(f"{i}: {e}"))
            page.on(
                "console",
                lambda m, i=interval: m.type == "error" and problems.append(f"{i}: {m.text}"),
            )
            await page.goto(f"{base}/demo?symbol={symbol}&interval={interval}")
            pages[interval] = page
        for page in pages.values():
            await page.wait_for_function("window.kisray.restBar !== null", timeout=30_000)
        await asyncio.sleep(seconds)
        for interval, page in pages.items():
            state = await page.evaluate("window.kisray")
            result["updates"][interval] = state["updates"]
            problems.extend(f"{interval}: {code}" for code in state["errors"])
            result["equal"][interval] = False
            for _ in range(40):
                before = await _rest_live_bar(client, base, symbol, interval)
                shown = _bar(await page.evaluate("window.kisray.liveBar"))
                after = await _rest_live_bar(client, base, symbol, interval)
                if before == after == shown:
                    result["equal"][interval] = True
                    break
                await asyncio.sleep(0.25)
    return result
