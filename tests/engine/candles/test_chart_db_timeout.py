"""An exhausted pool must give DB_CONNECTION_ERROR quickly, never a request that hangs."""

from __future__ import annotations

import time

import pytest

from engine.candles.service import ChartService, build_query
from engine.domain.calendar import get_calendar
from engine.errors import DatabaseUnavailableError
from engine.storage.pool import create_pool


async def test_exhausted_pool_is_a_database_error_not_a_hang(migrated_url: str) -> None:
    pool = await create_pool(migrated_url, min_size=1, max_size=1)
    calendar = get_calendar()
    service = ChartService(pool, calendar, db_timeout_s=0.5)
    query = build_query("005930", "5m", 1764547200, 1764568800, None, True, max_buckets=20_000)
    # The year's sessions take ~4 s to compute once (the CandleActor does it at start): only
    # the database wait is timed here, whichever test ran first.
    calendar.sessions(1764547200, 1764568800)
    try:
        async with pool.acquire():  # another request holds the only connection
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailableError, match="did not answer"):
                await service.series(query)
            assert time.monotonic() - started < 3
        series = await service.series(query)  # the connection is back: served normally
        assert series.symbol == "005930"
    finally:
        await pool.close()
