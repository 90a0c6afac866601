"""Three tabs of the demo page in headless Chromium receive live trades over one KIS socket."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.sim_process import SimulatorProcess
from tests.api.ws_support import kill_socket_actor, start_socket_actor
from tests.conftest import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def sim_and_serve(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    if not Path(CHROMIUM).exists():
        pytest.skip("no /usr/bin/chromium (make test installs Debian's chromium when root)")
    pytest.importorskip("playwright", reason="playwright-python is in the test extras")
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
    from playwright.async_api import async_playwright

    serve_url, sim_url = sim_and_serve
    profile = tempfile.mkdtemp(prefix="kisray-chromium-")
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=FLAGS
            )
            try:
                pages = []
                for _ in range(3):
                    page = await context.new_page()
                    await page.goto(f"{serve_url}/demo?channels=trade:005930 trade:000660")
                    pages.append(page)
                for page in pages:
                    await page.wait_for_function("window.kisray.trades >= 3", timeout=20_000)
                    state = await page.evaluate("window.kisray")
                    assert state["subscribed"] == ["trade:005930", "trade:000660"]
                    assert state["errors"] == []
                async with httpx.AsyncClient() as client:
                    stats = (await client.get(f"{sim_url}/_sim/stats", timeout=5)).json()
                assert stats["connections_open"] == 1  # three tabs, one KIS socket
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
