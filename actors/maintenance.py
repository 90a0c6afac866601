"""MaintenanceActor: runs engine.storage.maintenance.StorageMaintenance once per cluster.

Aggregate self-refresh (freshness) every minute and retention every hour, against the configured
database. One named, detached instance per cluster (`kisray up` starts it in every profile); a
database that is down at start or later is retried by the loop, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import ray

from actors.names import MAINTENANCE, NAMESPACE
from engine.config import get_settings
from engine.errors import DatabaseUnavailableError
from engine.logs import configure_from_settings
from engine.storage.maintenance import StorageMaintenance
from engine.storage.pool import create_pool
from engine.storage.retention import RetentionPolicy

logger = logging.getLogger(__name__)

RETRY_S = 5.0


@ray.remote(num_cpus=0, max_restarts=-1)
class MaintenanceActor:
    async def __init__(  # type: ignore[misc]  # Ray awaits an async actor constructor
        self, database_url: str | None = None, freshness_every_s: float = 60.0
    ) -> None:
        settings = get_settings()
        configure_from_settings(settings, console=False)
        database_url = database_url or settings.database_dsn
        if database_url is None:
            raise DatabaseUnavailableError("storage maintenance needs KISRAY_DATABASE_URL")
        self._url = database_url
        self._policy = RetentionPolicy.from_settings(settings)
        self._every_s = freshness_every_s
        self._stop = asyncio.Event()
        self._maintenance: StorageMaintenance | None = None
        # Started here, not by a call, so a restarted actor (max_restarts) resumes by itself.
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def ready(self) -> bool:
        return not self._task.done()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pool = await create_pool(self._url, min_size=1, max_size=2)
            except DatabaseUnavailableError as exc:
                logger.warning("storage maintenance waiting for the database: %s", exc.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RETRY_S)
                continue
            try:
                self._maintenance = StorageMaintenance(
                    pool, self._policy, freshness_every_s=self._every_s
                )
                await self._maintenance.run_forever(self._stop)
            finally:
                await pool.close()

    def last(self) -> dict | None:
        """The last round's freshness report (as /health shows aggregates), or None."""
        done = self._maintenance.last if self._maintenance is not None else None
        return done.freshness.as_dict() if done is not None else None

    async def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            await self._task


def start_maintenance(database_url: str | None = None, **actor_options: object):
    """Get or create the cluster's MaintenanceActor (its loop starts with it)."""
    options: dict[str, object] = {
        "name": MAINTENANCE,
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "lifetime": "detached",
    }
    options.update(actor_options)
    # mypy ignores class decorators: ray.remote made MaintenanceActor an ActorClass.
    return MaintenanceActor.options(**options).remote(database_url)  # type: ignore[attr-defined]
