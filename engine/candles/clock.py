"""The candle service's "now": the wall clock, or the simulator's in the demo stack.

The built-in simulator maps the present into a trading session (engine.sim.clock), so its trades
can be hours away from the wall clock. A candle service that cut its gap fill at the wall clock
would then never fill today's simulated session; when `kisray up` runs the simulator
(KISRAY_MARKET_CLOCK=sim) it asks the
simulator what time it is instead (`GET /_sim/clock`, at most once a second, counted on in
between). Real KIS keeps the wall clock. Should the simulator not answer, the wall clock is used
and that is logged once.
"""

from __future__ import annotations

import logging
import time

import httpx

logger = logging.getLogger(__name__)

REFRESH_S = 1.0
TIMEOUT_S = 1.0


class MarketClock:
    def __init__(self, sim_clock_url: str | None = None) -> None:
        self.url = sim_clock_url  # None: the wall clock
        self._epoch = 0.0  # the simulator's time at `_asked`
        self._asked: float | None = None  # time.monotonic() of the last answer
        self._failed_logged = False

    @classmethod
    def from_settings(cls, market_clock: str, sim_port: int) -> MarketClock:
        """The simulator's clock when the stack runs it (`market_clock="sim"`), else the wall's."""
        return cls(f"http://127.0.0.1:{sim_port}/_sim/clock" if market_clock == "sim" else None)

    async def now(self) -> int:
        """Epoch seconds of the market's present."""
        if self.url is None:
            return int(time.time())
        mono = time.monotonic()
        if self._asked is None or mono - self._asked >= REFRESH_S:
            try:
                async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                    reply = await client.get(self.url)
                    reply.raise_for_status()
                    self._epoch, self._asked = float(reply.json()["epoch"]), mono
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                if not self._failed_logged:
                    logger.warning(
                        "simulator clock %s unreachable (%s); using the wall clock", self.url, exc
                    )
                    self._failed_logged = True
                return int(time.time())
        # Between answers the simulated clock is counted on at real-time speed.
        return int(self._epoch + (mono - self._asked))
