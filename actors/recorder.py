"""Recorder: the KIS socket's trades → 1-minute candles in `market_candles`, and the live bar.

A thin Ray shell over `engine.recorder.core.RecorderCore`. It registers as a consumer of the KIS
socket actor, subscribes H0STCNT0 for its symbols (configured, plus `add_symbols`/`remove_symbols`,
kept in a file under the data directory so a restart keeps them), pulls micro-batches, and every
`KISRAY_RECORDER_FLUSH_S` writes the closed bars (with per-symbol checkpoints) in one upsert.

It owns each symbol's forming bar and publishes it: to the CandleActor (`update_forming_bar`),
and to anyone polling `forming_updates(after, wait_s)` — the fan-out's `candle:SYMBOL:1m` source.

Restarts (`max_restarts=-1`): `__init__` runs again, writes what the previous process spooled,
restores the checkpoints and re-subscribes, so no volume is counted twice.

Repairs: a third task asks the core every second to repair the minutes it did not see whole
from the KIS minute chart (engine/recorder/repair.py), with its own REST client at the
recorder's share of the rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import ray

from actors.names import CANDLES, KIS_SOCKET, NAMESPACE, RECORDER, find
from actors.probe import probe
from engine.config import get_settings
from engine.domain.bars import MinuteBar
from engine.domain.symbols import parse_symbol
from engine.errors import DatabaseUnavailableError, UnknownConsumerError, UpstreamUnavailableError
from engine.kis.registry import Registration
from engine.kis.rest import KisRestClient, credentials, repair_rate
from engine.kis.tr import TRADE
from engine.logs import configure_from_settings
from engine.recorder.core import RecorderCore

logger = logging.getLogger(__name__)

RETRY_S = 1.0
REPAIR_POLL_S = 1.0


@ray.remote(num_cpus=0, max_restarts=-1)
class Recorder:
    async def __init__(  # type: ignore[misc]  # Ray awaits an async actor constructor
        self,
        database_url: str | None = None,
        symbols: Iterable[str] | None = None,
        *,
        socket_name: str = KIS_SOCKET,
        consumer_id: str = RECORDER,
        candle_actor_name: str | None = CANDLES,
        state_dir: str | None = None,
        rest_url: str | None = None,
    ) -> None:
        settings = get_settings()
        self._settings = settings
        self._rest_url = rest_url or settings.rest_url
        configure_from_settings(settings, console=False)
        database_url = database_url or settings.database_dsn
        if database_url is None:
            raise DatabaseUnavailableError("the recorder needs KISRAY_DATABASE_URL")
        self._state_dir = Path(state_dir) if state_dir else settings.data_dir / "recorder"
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._symbols_file = self._state_dir / f"{consumer_id}.symbols.json"
        self._symbols: list[str] = self._load_symbols(symbols or settings.symbols)
        self._socket_name = socket_name
        self._consumer_id = consumer_id
        self._candle_actor_name = candle_actor_name
        self._flush_s = settings.recorder_flush_s
        self.core = RecorderCore(
            database_url,
            self._state_dir / f"{consumer_id}.spool",
            max_spool_rows=settings.recorder_spool_rows,
            repair_delay_s=settings.recorder_repair_delay_s,
            stall_s=settings.recorder_stall_s,
            continuous_end=(
                datetime.combine(date.min, settings.session_close)
                - timedelta(minutes=settings.closing_call_minutes)
            ).time(),
        )
        self._socket: Any = None  # the kis-socket actor handle, once attached
        self._subscribed: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._forming_seq = 0
        self._forming: dict[str, MinuteBar] = {}
        self._forming_changed = asyncio.Condition()
        self._last_batch_seq = 0
        self._seq_gaps = 0
        self._dropped = 0
        self._upstream = "unknown"
        self._started_at = time.time()
        self._tasks = [
            asyncio.create_task(self._consume(), name="recorder-consume"),
            asyncio.create_task(self._flush_forever(), name="recorder-flush"),
            asyncio.create_task(self._repair_forever(), name="recorder-repair"),
        ]

    # -- symbols --------------------------------------------------------------------------------

    def _load_symbols(self, configured: Iterable[str]) -> list[str]:
        if self._symbols_file.exists():
            with contextlib.suppress(OSError, ValueError):
                return [parse_symbol(s) for s in json.loads(self._symbols_file.read_text())]
        return [parse_symbol(s) for s in configured]

    def _save_symbols(self) -> None:
        self._symbols_file.write_text(json.dumps(self._symbols))

    async def add_symbols(self, symbols: list[str]) -> list[str]:
        """Record these symbols too (SubscriptionLimitError past the KIS cap); returns all."""
        wanted = [parse_symbol(s) for s in symbols]
        new = [s for s in wanted if s not in self._symbols]
        if new and self._socket is not None:
            await self._socket.subscribe.remote(
                self._consumer_id, [Registration(TRADE, s) for s in new]
            )
            self._subscribed.update(new)
        self._symbols.extend(new)
        self._save_symbols()
        return list(self._symbols)

    async def remove_symbols(self, symbols: list[str]) -> list[str]:
        gone = [parse_symbol(s) for s in symbols if s in self._symbols]
        self._symbols = [s for s in self._symbols if s not in gone]
        self._save_symbols()
        if gone and self._socket is not None:
            await self._socket.unsubscribe.remote(
                self._consumer_id, [Registration(TRADE, s) for s in gone]
            )
            self._subscribed.difference_update(gone)
        self.core.suspects.forget(gone)
        return list(self._symbols)

    def symbols(self) -> list[str]:
        return list(self._symbols)

    # -- the loops ------------------------------------------------------------------------------

    async def _start_core(self) -> None:
        while not self.core.started:
            try:
                await self.core.start()
            except DatabaseUnavailableError as exc:
                logger.warning("recorder waiting for the database: %s", exc)
                await asyncio.sleep(RETRY_S)

    async def _attach(self) -> None:
        """Find the KIS socket actor, register and subscribe (again, after any loss)."""
        waited = False
        while True:
            try:
                socket = find(self._socket_name)
                await socket.register.remote(self._consumer_id)
                regs = [Registration(TRADE, s) for s in self._symbols]
                if regs:
                    await socket.subscribe.remote(self._consumer_id, regs)
                self._socket = socket
                self._subscribed = set(self._symbols)
                logger.info("recorder subscribed to %d symbols", len(regs))
                return
            except (ValueError, ray.exceptions.RayActorError) as exc:
                level = logging.DEBUG if waited else logging.INFO
                logger.log(level, "recorder waiting for the KIS socket actor: %s", exc)
                waited = True
            await asyncio.sleep(RETRY_S)

    async def _consume(self) -> None:
        # Checkpoints first: a trade added before them would be counted from the wrong baseline.
        await self._start_core()
        await self._attach()
        while True:
            try:
                batch = await self._socket.next_batch.remote(self._consumer_id, self._flush_s)
            except UnknownConsumerError:
                logger.warning("recorder: the KIS socket forgot us; registering again")
                await self._attach()
                continue
            except ray.exceptions.RayActorError:
                logger.warning("recorder: the KIS socket actor is gone; waiting for it")
                await asyncio.sleep(RETRY_S)
                await self._attach()
                continue
            if batch is None:
                continue
            if self._last_batch_seq and batch.seq != self._last_batch_seq + 1:
                self._seq_gaps += 1
            self._last_batch_seq = batch.seq
            self._dropped += batch.dropped
            if batch.statuses:
                self._upstream = batch.statuses[-1]
            self.core.add_trades(batch.records, batch.statuses)

    async def _flush_forever(self) -> None:
        await self._start_core()
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
            except Exception:
                logger.exception("recorder flush failed")

    async def _repair_forever(self) -> None:
        await self._start_core()
        settings = self._settings
        try:
            key, secret = credentials(settings)
        except UpstreamUnavailableError as exc:
            logger.warning("recorder: minute repairs are off: %s", exc)
            return
        async with KisRestClient(
            self._rest_url,
            key,
            secret,
            rate_per_s=repair_rate(settings),
            token_cache=settings.data_dir / "kis-token.json",
        ) as kis:
            while True:
                await asyncio.sleep(REPAIR_POLL_S)
                try:
                    await self.core.repair(kis)
                except Exception:
                    logger.exception("recorder minute repair failed")

    async def flush(self) -> dict:
        """Write closed bars now and publish the forming ones; returns what happened."""
        async with self._flush_lock:
            result = await self.core.flush()
            changes = self.core.forming_changes()
            if changes:
                await self._publish(changes)
        return {
            "bars": result.bars,
            "written_batches": result.written_batches,
            "backlog_batches": result.backlog_batches,
        }

    async def _publish(self, changes: dict[str, MinuteBar]) -> None:
        async with self._forming_changed:
            self._forming.update(changes)
            self._forming_seq += 1
            self._forming_changed.notify_all()
        if self._candle_actor_name is None:
            return
        try:
            candles = find(self._candle_actor_name)
        except ValueError:
            return  # no CandleActor in this cluster (yet)
        calls = [candles.update_forming_bar.remote(s, bar) for s, bar in changes.items()]
        # Awaited, so in-flight pushes stay bounded by one flush's worth.
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                logger.warning("forming bar push to the CandleActor failed: %s", result)
                break

    # -- published state ------------------------------------------------------------------------

    def forming_bars(self) -> dict[str, MinuteBar]:
        """Every symbol's forming 1-minute bar."""
        return self.core.forming_bars()

    async def forming_updates(
        self, after: int = 0, wait_s: float = 1.0
    ) -> tuple[int, dict[str, MinuteBar]]:
        """Long-poll for the `candle:SYMBOL:1m` channel: waits up to `wait_s` for a publication
        newer than `after`, then returns (seq, {symbol: bar}) with every bar published since
        the flush after `after` (all known bars when `after` is 0 or from an earlier process)."""
        async with self._forming_changed:
            if self._forming_seq <= after:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._forming_changed.wait_for(lambda: self._forming_seq > after), wait_s
                    )
            return self._forming_seq, dict(self._forming)

    def health(self) -> dict:
        core = self.core.health()
        return {
            "status": "ok" if core["database"] == "ok" and core["started"] else "degraded",
            "symbols": list(self._symbols),
            "subscribed": sorted(self._subscribed),
            "upstream": self._upstream,
            "batch_seq_gaps": self._seq_gaps,
            "dropped_records": self._dropped,
            "uptime_s": round(time.time() - self._started_at, 1),
            **core,
        }

    async def ready(self) -> bool:
        """True once checkpoints are restored and the socket subscription is in place."""
        return self.core.started and self._socket is not None


def recorder_actor(database_url: str | None = None, **options: Any):
    """The cluster's Recorder, created on first use (actors.names.RECORDER)."""
    actor_options: dict[str, Any] = {
        "name": RECORDER,
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "lifetime": "detached",
    }
    actor_options.update(options.pop("actor_options", {}) or {})
    # mypy ignores class decorators: ray.remote made Recorder an ActorClass.
    return Recorder.options(**actor_options).remote(database_url, **options)  # type: ignore[attr-defined]


async def recorder_health(timeout_s: float = 1.0) -> dict:
    """The running Recorder's health (its write backlog included) for GET /health."""
    return await probe(RECORDER, "health", timeout_s)
