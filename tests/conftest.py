"""Session-wide fixtures: one embedded PostgreSQL and one local Ray for the whole run.

Tests that need a clean schema ask `make_database` for a fresh database on the shared server
instead of starting another server.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from api.cli.ray_head import ensure_auth_token, use_local_ray_env
from api.ingress import direct_ingress_env
from engine.storage.embedded import EmbeddedPostgres, EmbeddedStatus
from tests.timescale_server import TimescaleServer, find_unavailable_reason

# Ray reads these at import time: keep the test cluster on loopback, with token auth and a token
# of the session's own, so the suite needs nothing in HOME and leaves nothing there.
_RAY_TOKEN_DIR = Path(tempfile.mkdtemp(prefix="kisray-test-ray-"))
atexit.register(shutil.rmtree, _RAY_TOKEN_DIR, ignore_errors=True)
use_local_ray_env(ensure_auth_token(_RAY_TOKEN_DIR))

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


@contextlib.contextmanager
def _database_factory(admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory of empty databases on the server at `admin_url`; all dropped at the end."""
    created: list[str] = []

    async def create(name: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    def factory() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        asyncio.run(create(name)) if not _loop_running() else _run_in_thread(create(name))
        created.append(name)
        return _with_database(admin_url, name)

    yield factory

    async def drop_all() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            for name in created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    _run_in_thread(drop_all())


@pytest.fixture(scope="session")
def make_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """Create an empty database on the shared embedded server; returns its URL."""
    with _database_factory(pg_admin_url) as factory:
        yield factory


def _skip_unless_timescaledb_can_run() -> None:
    reason = find_unavailable_reason()
    if reason is not None:
        if os.environ.get("KISRAY_TEST_REQUIRE_TIMESCALE"):
            pytest.fail(f"KISRAY_TEST_REQUIRE_TIMESCALE is set, but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def timescale_url() -> Iterator[str]:
    """Admin URL of the session's TimescaleDB server: KISRAY_TEST_TIMESCALE_URL if set, else a
    throwaway cluster started on first use. Where none can run, the tests that need it skip with
    the reason, or fail when KISRAY_TEST_REQUIRE_TIMESCALE is set (CI: TimescaleDB mode is
    tested in every run, never silently skipped)."""
    if TIMESCALE_URL:
        yield TIMESCALE_URL
        return
    _skip_unless_timescaledb_can_run()
    server = TimescaleServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def timescale_unloaded_url() -> Iterator[str]:
    """A PostgreSQL 15 server with TimescaleDB installed but not in shared_preload_libraries."""
    _skip_unless_timescaledb_can_run()
    server = TimescaleServer(preload=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def make_timescale_database(timescale_url: str) -> Iterator[Callable[[], str]]:
    """Create an empty database on the session's TimescaleDB server; returns its URL."""
    with _database_factory(timescale_url) as factory:
        yield factory


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
    from engine.storage.migrate import migrate

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
