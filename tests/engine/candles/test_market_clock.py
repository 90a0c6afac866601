"""The candle service's "now": the simulator's session clock in the demo stack, else the wall."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import httpx

from engine.candles.clock import MarketClock
from engine.domain.kst import KST
from tests.conftest import free_port
from tests.engine.conftest import SIM_START


async def test_the_demo_stack_clock_is_the_simulators_session_not_the_wall(sim_factory) -> None:
    async with sim_factory() as sim:
        clock = MarketClock(f"{sim.rest_url}/_sim/clock")
        start = datetime(*SIM_START.timetuple()[:6], tzinfo=KST).timestamp()
        first = await clock.now()
        assert start <= first <= start + 5  # 2025-03-12 10:00 KST, years from the wall clock
        async with httpx.AsyncClient(base_url=sim.rest_url) as client:
            reply = await client.post("/_sim/clock", json={"start": "2025-03-13T14:00:00"})
            reply.raise_for_status()
        await asyncio.sleep(1.1)  # past the refresh: the clock asks the simulator again
        moved = await clock.now()
        later = datetime(2025, 3, 13, 14, 0, tzinfo=KST).timestamp()
        assert later <= moved <= later + 5


async def test_production_and_an_unreachable_simulator_keep_the_wall_clock(caplog) -> None:
    assert MarketClock.from_settings("wall", 8765).url is None
    assert abs(await MarketClock().now() - time.time()) <= 1
    gone = MarketClock(f"http://127.0.0.1:{free_port()}/_sim/clock")
    assert abs(await gone.now() - time.time()) <= 1
    assert abs(await gone.now() - time.time()) <= 1
    assert sum("using the wall clock" in r.getMessage() for r in caplog.records) == 1
