"""Fixtures for the engine tests: an in-process KIS simulator on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
import pytest

from engine.kis import approval_request
from engine.sim.server import SimulatorConfig, SimulatorHandle, serve_simulator

# A Wednesday mid-session, so tests never depend on the real time of day.
SIM_START = datetime(2025, 3, 12, 10, 0, 0)


@asynccontextmanager
async def running_sim(**overrides: object) -> AsyncIterator[SimulatorHandle]:
    options: dict[str, object] = {
        "port": 0,
        "start": SIM_START,
        "notice_interval_s": 0,
        "tick_interval_s": 0.02,
    }
    options.update(overrides)
    handle = await serve_simulator(SimulatorConfig(**options))  # type: ignore[arg-type]
    try:
        yield handle
    finally:
        await handle.close()


@pytest.fixture
def sim_factory() -> Callable[..., object]:
    """`async with sim_factory(**config_overrides) as sim:` — sim.ws_url, sim.rest_url."""
    return running_sim


@pytest.fixture
def approval() -> Callable[..., object]:
    """`await approval(sim.rest_url)` → a fresh approval key for the default app key."""
    return approval_key


async def approval_key(rest_url: str, app_key: str = "app-key", secret: str = "secret") -> str:
    async with httpx.AsyncClient(base_url=rest_url) as client:
        reply = await client.post("/oauth2/Approval", json=approval_request(app_key, secret))
        reply.raise_for_status()
        return reply.json()["approval_key"]
