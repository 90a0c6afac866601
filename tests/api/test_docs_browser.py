"""`/docs` in headless Chromium with every request off this server refused (no CDN, no
network): Swagger UI renders, and "Try it out" on /candles with its defaults gets 200."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.browser_support import chromium, skip_without_chromium
from tests.api.test_candles_api import SYMBOL, loaded_client

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def api(serve_url: str, migrated_url: str) -> Iterator[httpx.Client]:
    skip_without_chromium()
    yield from loaded_client(serve_url, migrated_url)


async def test_docs_render_offline_and_try_it_out_defaults_succeed(api: httpx.Client) -> None:
    base = str(api.base_url).rstrip("/")
    own = urlsplit(base).netloc
    refused: list[str] = []

    async def same_origin_only(route) -> None:
        if urlsplit(route.request.url).netloc == own:
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort("internetdisconnected")

    async with chromium() as context:
        await context.route("**/*", same_origin_only)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{base}/docs")
        block = page.locator("#operations-candles-candles_candles__symbol__get")
        await block.wait_for(timeout=30_000)
        assert await page.locator(".opblock").count() >= 8
        await block.locator(".opblock-summary").click()
        await block.locator(".try-out__btn").click()
        # The symbol's example is a listed code; this database holds test symbols.
        await block.locator("tr[data-param-name='symbol'] input").fill(SYMBOL)
        for name in ("from", "to", "limit", "countback"):
            value = await block.locator(f"tr[data-param-name='{name}'] input").input_value()
            assert value == "", (name, value)  # left empty: not sent
        await block.locator(".execute").click()
        status = block.locator(".live-responses-table tr.response .response-col_status")
        await status.wait_for(timeout=30_000)
        assert (await status.inner_text()).strip().startswith("200")
        assert errors == []
        assert refused == []  # nothing was even attempted off this server
