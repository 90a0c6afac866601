"""A second kisray Serve application with a database, log directory and secrets of its own.

The outage, security and secrets tests stop its database, set an API token, a CORS allowlist and
fake KIS credentials, and read its log files, none of which may touch the session's shared
PostgreSQL or app. It runs on the session's Ray cluster under the route prefix `/iso`, with its
own CandleActor, both started with their own environment (runtime_env env_vars).

Started once per test session on first use (several test modules share it) and stopped when the
session ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from engine.storage.embedded import EmbeddedPostgres
from tests.conftest import free_port

APP_NAME = "kisray-iso"
PREFIX = "/iso"
CANDLE_ACTOR = "candles-iso"
SYMBOL = "900900"
TOKEN = "iso-token-9f8e7d6c5b4a"
CORS_ORIGIN = "https://charts.example.test"
# A browser page served (by interception) from a loopback origin that is listed, for the
# cross-origin browser test; a fixed port chosen when the module loads.
PAGE_ORIGIN = f"http://127.0.0.1:{free_port()}"
FAKE_APP_KEY = "PSisoFakeAppKey0123456789abcdef"
FAKE_APP_SECRET = "isoFakeAppSecret+/=zyxwvutsrqponmlkjihgfedcba9876543210"


@dataclass
class IsolatedStack:
    base_url: str  # the Serve proxy plus PREFIX
    database: EmbeddedPostgres
    database_url: str
    log_dir: Path
    candle_actor: object  # held: a named actor without handles is collected
    token: str = TOKEN

    @property
    def secrets(self) -> tuple[str, ...]:
        return (TOKEN, FAKE_APP_KEY, FAKE_APP_SECRET)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


_stack: IsolatedStack | None = None


def _run(coro) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _prepare(url: str) -> None:
    from engine.candles.store import upsert_minute_bars
    from engine.history.sample_data import synthetic_minute_bars
    from engine.storage.migrate import migrate

    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        bars = synthetic_minute_bars([SYMBOL], date(2023, 6, 12), date(2023, 6, 13), seed=5)
        await upsert_minute_bars(conn, bars)
    finally:
        await conn.close()


def isolated_stack(
    serve_proxy_url: str, config: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> IsolatedStack:
    """The stack, started on the first call of the session; a module's `iso` fixture calls it."""
    global _stack
    if _stack is not None:
        return _stack
    root = tmp_path_factory.getbasetemp() / "iso-stack"
    import ray
    from ray import serve

    from actors.candles import NAMESPACE, CandleActor
    from api.app import KisrayIngress

    database = EmbeddedPostgres(root / "data")
    url = database.start().url
    config.add_cleanup(database.stop)
    _run(_prepare(url))

    log_dir = root / "logs"
    env = {
        "KISRAY_DATABASE_URL": url,
        "KISRAY_DATA_DIR": str(root / "data"),
        "KISRAY_LOG_DIR": str(log_dir),
        "KISRAY_API_TOKEN": TOKEN,
        "KISRAY_CORS_ORIGINS": f"{CORS_ORIGIN},{PAGE_ORIGIN}",
        "KISRAY_KIS_APP_KEY": FAKE_APP_KEY,
        "KISRAY_KIS_APP_SECRET": FAKE_APP_SECRET,
        "KISRAY_MAX_REQUEST_BYTES": "4096",
    }
    runtime_env = {"env_vars": env}
    actor = CandleActor.options(
        name=CANDLE_ACTOR, namespace=NAMESPACE, runtime_env=runtime_env
    ).remote()
    ray.get(actor.ready.remote(), timeout=60)
    ingress = KisrayIngress.options(
        ray_actor_options={"num_cpus": 0, "runtime_env": runtime_env}
    ).bind(candle_actor_name=CANDLE_ACTOR)
    serve.run(ingress, name=APP_NAME, route_prefix=PREFIX)
    _stack = IsolatedStack(f"{serve_proxy_url}{PREFIX}", database, url, log_dir, actor)
    return _stack
