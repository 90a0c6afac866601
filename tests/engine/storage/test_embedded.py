from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg
import psutil

from engine.storage.embedded import EmbeddedPostgres


async def _query(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata) in cmdline:
            found.append(proc)
    return found


def test_data_survives_restart_and_a_second_start_reuses_the_server(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    first = server.start()
    try:
        asyncio.run(_query(first.url, "CREATE TABLE kept (x int)"))
        again = EmbeddedPostgres(tmp_path).start()
        assert again.reused and again.pid == first.pid
        assert len(_postgres_processes(server.pgdata)) == 1
        server.stop()
        restarted = server.start()
        assert not restarted.reused
        assert asyncio.run(_query(restarted.url, "SELECT to_regclass('kept')::text")) == "kept"
    finally:
        server.stop()
    assert _postgres_processes(server.pgdata) == []


def test_a_server_left_by_a_crashed_run_is_detected_and_not_duplicated(tmp_path: Path) -> None:
    crashed = EmbeddedPostgres(tmp_path).start()  # the "crashed" run never calls stop()
    survivor = EmbeddedPostgres(tmp_path)
    try:
        status = survivor.start()
        assert status.reused and status.pid == crashed.pid
        assert asyncio.run(_query(status.url, "SELECT 1")) == 1
        # A hard-killed postmaster leaves a stale postmaster.pid: the next start replaces it.
        os.kill(crashed.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(crashed.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        fresh = EmbeddedPostgres(tmp_path).start()
        assert not fresh.reused and fresh.pid != crashed.pid
        assert asyncio.run(_query(fresh.url, "SELECT 1")) == 1
    finally:
        survivor.stop()
