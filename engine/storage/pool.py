"""asyncpg pool factory: the one way kisray opens database connections."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from engine.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

# Errors that mean "the database is not there right now", as opposed to a bad query.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # All timestamps are UTC on the wire; KST is applied only at the edges.
    await conn.execute("SET TIME ZONE 'UTC'")


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 5.0,
    command_timeout: float = 30.0,
) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            command_timeout=command_timeout,
            init=_init_connection,
        )
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailableError(f"cannot connect to the database: {exc}") from exc


CONNECT_TIMEOUT_S = 5.0


async def connect(url: str) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailableError(f"cannot connect to the database: {exc}") from exc
    await _init_connection(conn)
    return conn
