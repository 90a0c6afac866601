"""Three tabs of the demo page in headless Chromium receive live trades over one KIS socket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from api.cli.sim_process import SimulatorProcess
from tests.api.browser_support import chromium, skip_without_chromium
from tests.api.ws_support import kill_socket_actor, start_socket_actor
from tests.conftest import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def sim_and_serve(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    skip_without_chromium()
    port = free_port()
    sim = SimulatorProcess(port, tmp_path_factory.mktemp("sim") / "sim.log")
    sim.start()
    start_socket_actor(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    try:
        yield serve_url, f"http://127.0.0.1:{port}"
    finally:
        kill_socket_actor()
        sim.stop()


async def test_three_tabs_receive_trades_over_one_upstream_connection(sim_and_serve) -> None:
    serve_url, sim_url = sim_and_serve
    async with chromium() as context:
        pages, script_errors = [], []
        for _ in range(3):
            page = await context.new_page()
            page.on("pageerror", lambda error: script_errors.append(str(error)))
            await page.goto(f"{serve_url}/demo?symbol=005930&channels=trade:000660")
            pages.append(page)
        for page in pages:
            await page.wait_for_function("window.kisray.trades >= 3", timeout=20_000)
            state = await page.evaluate("window.kisray")
            assert {"trade:005930", "book:005930", "candle:005930:1m", "trade:000660"} <= set(
                state["subscribed"]
            )
            assert state["errors"] == []
            # The chart is drawn by the locally served Lightweight Charts, and the tape fills.
            assert await page.evaluate("typeof LightweightCharts.createChart") == "function"
            assert await page.locator("#chart canvas").count() > 0
            await page.wait_for_function("document.querySelectorAll('#tape tr').length > 0")
        assert script_errors == []
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{sim_url}/_sim/stats", timeout=5)).json()
        assert stats["connections_open"] == 1  # three tabs, one KIS socket
