"""Session-wide fixtures: one embedded PostgreSQL and one local Ray for the whole run.

Tests that need a clean schema ask `make_database` for a fresh database on the shared server
instead of starting another server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from api.ingress import direct_ingress_env
from api.ray_head import LOCAL_RAY_ENV
from engine.db.embedded import EmbeddedPostgres, EmbeddedStatus

# Ray reads these at import time: keep the test cluster on loopback, with token auth.
os.environ.update(LOCAL_RAY_ENV)

TIMESCALE_URL = os.environ.get("KISRAY_TEST_TIMESCALE_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_port_range(count: int) -> int:
    """A first port whose next `count - 1` neighbours are free too."""
    for _ in range(50):
        first = free_port()
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


SERVE_PORTS = 4  # the main app's replica and the isolated stack's, with room for a restart
SERVE_PORT = _free_port_range(SERVE_PORTS)


@pytest.fixture(scope="session")
def kisray_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data and log directories shared by the session's in-process services."""
    return tmp_path_factory.mktemp("kisray")


@pytest.fixture(scope="session")
def pg_server(kisray_home: Path) -> Iterator[EmbeddedStatus]:
    server = EmbeddedPostgres(kisray_home / "data")
    status = server.start()
    yield status
    server.stop()


@pytest.fixture(scope="session")
def pg_admin_url(pg_server: EmbeddedStatus) -> str:
    return pg_server.url.replace("/kisray?", "/postgres?")


def _with_database(url: str, name: str) -> str:
    before, _, query = url.partition("?")
    base = before.rsplit("/", 1)[0]
    return f"{base}/{name}?{query}" if query else f"{base}/{name}"


@pytest.fixture(scope="session")
def make_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """Create an empty database on the shared server; returns its URL. Dropped at the end."""
    created: list[str] = []

    async def create(name: str) -> None:
        conn = await asyncpg.connect(pg_admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    def factory() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        asyncio.run(create(name)) if not _loop_running() else _run_in_thread(create(name))
        created.append(name)
        return _with_database(pg_admin_url, name)

    yield factory

    async def drop_all() -> None:
        conn = await asyncpg.connect(pg_admin_url)
        try:
            for name in created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop_all())


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(coro) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def migrated_url(pg_server: EmbeddedStatus) -> str:
    """The session database (`kisray`) with every migration applied."""
    from engine.db.migrate import migrate

    _run_in_thread(migrate(pg_server.url))
    return pg_server.url


@pytest.fixture(scope="session")
def ray_cluster(kisray_home: Path, migrated_url: str) -> Iterator[None]:
    import ray

    env_vars = {
        "KISRAY_DATABASE_URL": migrated_url,
        "KISRAY_DATA_DIR": str(kisray_home / "data"),
        "KISRAY_LOG_DIR": str(kisray_home / "logs"),
    }
    # Like `kisray up`, the session's Serve app answers on its replica's own port (direct
    # ingress). Only the raylet started here may see these: subprocess clusters of other tests
    # must not compete for the same ports.
    saved = dict(os.environ)
    os.environ.update(direct_ingress_env(SERVE_PORT, ports=SERVE_PORTS))
    try:
        ray.init(
            address="local",
            namespace="kisray",
            include_dashboard=False,
            runtime_env={"env_vars": env_vars},
            log_to_driver=False,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def serve_proxy_url(ray_cluster: None) -> str:
    """Serve's proxy: it routes every application of the session by its route prefix."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def serve_url(serve_proxy_url: str) -> str:
    """Base URL of the kisray Serve app: its replica's own port, as `kisray up` serves it."""
    import httpx
    from ray import serve

    from api.app import build_app

    serve.run(build_app(), name="kisray", route_prefix="/")
    # The first ingress replica takes the lowest port of the range; the isolated stack's comes
    # later and is reached through the proxy.
    url = f"http://127.0.0.1:{SERVE_PORT}"
    assert httpx.get(f"{url}/openapi.json", timeout=30).status_code == 200
    return url
