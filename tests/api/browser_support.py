"""Debian's headless Chromium under playwright-python, as the browser tests start it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
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


@asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    """A browser context with a fresh, throwaway profile; closed and removed at the end."""
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="kisray-chromium-")
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=FLAGS
            )
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def skip_without_chromium() -> None:
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.skip("no /usr/bin/chromium (make test installs Debian's chromium when root)")
    pytest.importorskip("playwright", reason="playwright-python is in the test extras")
