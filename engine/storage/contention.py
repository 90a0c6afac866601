"""TimescaleDB's own jobs (refresh and retention policies) and the maintenance actor work on the
same aggregates and chunks as an explicit load or retention run. When they meet, PostgreSQL
refuses one statement; the other session is doing the same work, so waiting a moment and
trying again is what the caller wants."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def retry_on_contention(
    call: Callable[[], Awaitable[T]],
    contended: Callable[[Exception], bool],
    *,
    tries: int,
    wait_s: float,
    what: str,
) -> T:
    """`call()`, tried again up to `tries` times in all while it fails with an error
    `contended` recognises; any other error, or the last try's, is raised."""
    for _ in range(tries - 1):
        try:
            return await call()
        except Exception as exc:
            if not contended(exc):
                raise
            logger.info("%s met a concurrent job (%s); trying again", what, exc)
            await asyncio.sleep(wait_s)
    return await call()
