"""`kisray up`: bring up the database, migrations, Ray and the Serve app; tear down what we started.

Teardown is in reverse order and only touches what this process started: an external database or
a Ray cluster we merely joined are left alone (on a joined cluster only our Serve app is deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.names import NAMESPACE, SEED_HISTORY, SERVE_APP
from api.cli.balancer import Balancer, BalancerConfig, find_haproxy
from engine.config import Settings
from engine.errors import AlreadyRunningError, ConfigError, KisrayError, StartupError
from engine.storage.embedded import EmbeddedPostgres
from engine.storage.migrate import MigrationReport, migrate

if TYPE_CHECKING:  # annotations only: the methods import these where they use them
    import subprocess

    from api.cli.collector import CollectorStatus
    from api.cli.ray_head import RayHead
    from api.cli.sim_process import SimulatorProcess

logger = logging.getLogger(__name__)

STATE_FILE = "kisray.state.json"  # where a running `kisray up` says where it is
UPSTREAM_FAILURES_BEFORE_BANNER = 3  # failed KIS connects after which start-up stops waiting


class RunLock:
    """An exclusive lock on the data directory: one `kisray up` per data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "kisray.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunningError(
                f"kisray is already running (pid {holder}) with data directory "
                f"{self.path.parent}; stop it first or set KISRAY_DATA_DIR to another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def ensure_port_free(host: str, port: int, setting: str) -> None:
    # SO_REUSEADDR, as the servers bind: a previous run's connections in TIME_WAIT don't count,
    # only a listener. (Linux honours it only if the old listener set it too; for KISRAY_PORT,
    # api.ingress.bind_with_reuse_addr sees to that.)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise ConfigError(f"{setting}: port {port} on {host} is already in use") from None


@dataclass
class Stack:
    settings: Settings
    ray_address: str | None = None
    with_simulator: bool = True
    database_url: str = ""
    migration: MigrationReport | None = None
    _lock: RunLock | None = None
    _embedded: EmbeddedPostgres | None = None
    _pg_reaper: subprocess.Popen[bytes] | None = None  # api.cli.pg_reaper
    _ray_head: RayHead | None = None
    _simulator: SimulatorProcess | None = None
    _serve_started: bool = False
    _balancer: Balancer | None = None  # haproxy, when KISRAY_REPLICAS > 1
    # Production profile: start the KIS collector (api.cli.collector) after the Serve app.
    with_collector: bool = False
    collector: CollectorStatus | None = None
    # Actor handles (ray.actor.ActorHandle: methods are looked up at run time).
    recorder: Any = None  # local profile: the Recorder this process started
    kis_socket: Any = None  # local profile: the KIS socket actor, upstream = the simulator
    maintenance: Any = None  # every profile: aggregate self-refresh and retention
    # Called after Ray is initialised: Ray installs its own signal handlers, ours must win.
    after_ray_init: Callable[[], None] = field(default=lambda: None)

    def start(self) -> None:
        self._lock = RunLock(self.settings.data_dir)
        self._lock.acquire()
        try:
            ensure_port_free(self.settings.host, self.settings.port, "KISRAY_PORT")
            if self.settings.replicas > 1:
                find_haproxy()  # before anything starts: say at once what is missing
                ports = self.settings.replica_ports
                if self.with_simulator and self.settings.sim_port in ports:
                    raise ConfigError(
                        f"KISRAY_SIM_PORT {self.settings.sim_port} is inside the replicas' "
                        f"ports {ports.start}-{ports.stop - 1}: set KISRAY_REPLICA_PORT"
                    )
                for port in ports:
                    ensure_port_free(self.settings.host, port, "KISRAY_REPLICA_PORT's range")
            if self.with_simulator:
                ensure_port_free("127.0.0.1", self.settings.sim_port, "KISRAY_SIM_PORT")
            self._start_database()
            if self.with_simulator:
                self._start_simulator()
            self._start_ray()
            self._write_state()  # before Serve: /health may answer before serve.run returns
            self._start_serve()
            self._start_maintenance()
            if self.with_simulator:
                self._start_demo_feed()
            if self.with_collector:
                from api.cli.collector import start_collector

                self.collector = start_collector(self.settings)
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def _start_database(self) -> None:
        if self.settings.database_url is not None:
            self.database_url = self.settings.database_url.get_secret_value()
        else:
            self._embedded = EmbeddedPostgres(self.settings.data_dir)
            self.database_url = self._embedded.start().url
            self._start_pg_reaper()
        self.migration = asyncio.run(migrate(self.database_url))
        logger.info(
            "database ready: mode %s, schema version %s",
            self.migration.mode,
            self.migration.current_version,
        )

    def _start_pg_reaper(self) -> None:
        """A child that stops the embedded database if this process dies without doing so."""
        import subprocess
        import sys

        from api.cli.child_process import die_with_parent

        self._pg_reaper = subprocess.Popen(
            [sys.executable, "-m", "api.cli.pg_reaper", str(self.settings.data_dir)],
            preexec_fn=die_with_parent,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )

    def _start_simulator(self) -> None:
        from api.cli.sim_process import SimulatorProcess

        self._simulator = SimulatorProcess(
            self.settings.sim_port, self.settings.log_dir / "simulator.log"
        )
        self._simulator.start()

    def _start_ray(self) -> None:
        from api.cli.ray_head import RayHead, ensure_auth_token, use_local_ray_env
        from api.ingress import direct_ingress_env

        if self.ray_address is None:
            token_path = ensure_auth_token(self.settings.data_dir)
            use_local_ray_env(token_path)  # before Ray is imported: it reads these at import time
        import ray

        env_vars = {
            "KISRAY_DATABASE_URL": self.database_url,
            "KISRAY_DATA_DIR": str(self.settings.data_dir),
            "KISRAY_LOG_DIR": str(self.settings.log_dir),
        }
        if self.with_simulator:
            # One clock: the candle service's "now" is the simulator's trading session.
            env_vars["KISRAY_MARKET_CLOCK"] = "sim"
        if self.with_simulator or self.with_collector:
            # This stack runs live data: /health is ready only once a tab would get it.
            env_vars["KISRAY_LIVE_REQUIRED"] = "true"
        address = self.ray_address
        if address is None:
            # A single-node production stack is its own collector node.
            from actors.names import COLLECTOR_RESOURCE

            resources: dict[str, float] | None = (
                {COLLECTOR_RESOURCE: 1} if self.with_collector else None
            )
            head = RayHead(self.settings.log_dir / "ray-head.log", token_path, resources=resources)
            self._ray_head = head
            ports = self.settings.replica_ports
            head.start({**env_vars, **direct_ingress_env(ports.start, len(ports))})
            address = head.address
        try:
            ray.init(
                address=address,
                namespace=NAMESPACE,
                runtime_env={"env_vars": env_vars},
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError) as exc:
            raise StartupError(f"cannot connect to Ray at {address}: {exc}") from exc
        self.after_ray_init()
        logger.info("Ray %s at %s", "started" if self._ray_head else "joined", address)

    def _start_serve(self) -> None:
        from ray import serve

        from actors.candles import candle_actor
        from api.app import build_app
        from api.ingress import serves_directly

        # The candle actor warms up (process, imports, pool, calendar) while Serve starts; left
        # to the first /candles, that request waited 10-13 s on a 2-core machine.
        with _logged("pre-warming the candle actor"):
            candle_actor().ready.remote()

        if self._ray_head is not None or serves_directly():
            # Our own head runs direct ingress (api/ingress.py): the replica answers on KISRAY_PORT
            # itself; Serve's proxy, which starts regardless, gets a spare port. The replica's
            # server takes its host from the same options.
            from api.cli.ray_head import free_port

            proxy_port = free_port(self.settings.host)
            serve.start(http_options={"host": self.settings.host, "port": proxy_port})
        else:  # a cluster started without it: its Serve proxy is the entry point
            serve.start(http_options={"host": self.settings.host, "port": self.settings.port})
        self._serve_started = True
        serve.run(build_app(), name=SERVE_APP, route_prefix="/", blocking=False)
        if self.settings.replicas > 1 and (self._ray_head is not None or serves_directly()):
            self._start_balancer()  # in front of this node's replicas

    def _start_balancer(self) -> None:
        workdir = self.settings.data_dir / "haproxy"
        config = BalancerConfig(
            self.settings.host,
            self.settings.port,
            self.settings.replica_ports,
            workdir / "503.http",
        )
        self._balancer = Balancer(config, workdir, self.settings.log_dir / "haproxy.log")
        self._balancer.start()

    def _start_maintenance(self) -> None:
        with _logged("starting storage maintenance"):
            from actors.maintenance import start_maintenance

            self.maintenance = start_maintenance()

    def _start_demo_feed(self) -> None:
        """Local profile: seed demo history from the simulator through the backfill path, in the
        background (bounded, so /health is never delayed), and run the recorder so charts move."""
        import threading

        settings = self.settings
        rest_url = f"http://127.0.0.1:{settings.sim_port}"
        if settings.seed_history_days > 0:
            threading.Thread(
                target=seed_demo_history,
                args=(settings, self.database_url, rest_url),
                name=SEED_HISTORY,
                daemon=True,
            ).start()
        with _logged("starting the KIS socket actor"):
            from actors.kis_socket import get_or_create_kis_socket

            self.kis_socket = get_or_create_kis_socket("local")
        with _logged("starting the recorder"):
            from actors.recorder import recorder_actor

            self.recorder = recorder_actor()
        self._wait_for_live_parts()

    def _wait_for_live_parts(self, timeout_s: float = 60.0) -> None:
        """Return once the socket actor and the recorder answer, so "kisray is up" means they do:
        right after their creation /health found the socket actor "unreachable" (its process was
        still starting) and said degraded."""
        import ray

        waits = [h.stats.remote() for h in (self.kis_socket,) if h is not None]
        waits += [h.ready.remote() for h in (self.recorder,) if h is not None]
        if not waits:
            return
        with _logged("waiting for the KIS socket actor and the recorder"):
            _, pending = ray.wait(waits, num_returns=len(waits), timeout=timeout_s)
            if pending:
                logger.warning(
                    "the KIS socket actor or the recorder did not answer within %.0f s", timeout_s
                )

    def _wait_until_healthy(self, timeout_s: float = 90.0) -> None:
        """Return once our own /health says ready, so the banner means what a tab will find.
        Each part answering its actor call was not enough: on a loaded machine the replica's
        first database probe, made by the first /health, could still time out. An upstream that
        keeps refusing or cannot be reached is not ours to wait for: after a few failed connects
        the banner comes with one warning line naming the problem (/health stays 503 until KIS
        answers)."""
        import time

        import httpx

        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        url = f"http://{host}:{self.settings.port}/health"
        deadline = time.monotonic() + timeout_s
        problems: list[str] = ["no answer yet"]
        while time.monotonic() < deadline:
            try:
                body = httpx.get(url, timeout=10).json()
            except (httpx.HTTPError, ValueError) as exc:
                problems = [type(exc).__name__]
            else:
                if body.get("status") == "ok":
                    return
                problems = list(body.get("problems") or [body.get("status")])
                kis = body.get("kis") or {}
                if kis.get("state") != "connected" and (
                    (kis.get("connect_failures") or 0) + (kis.get("in_use_rejections") or 0)
                    >= UPSTREAM_FAILURES_BEFORE_BANNER
                ):
                    logger.warning(
                        "KIS does not accept us yet; serving stored data meanwhile: %s",
                        "; ".join(map(str, problems)),
                    )
                    return
            time.sleep(0.5)
        logger.warning(
            "/health is not ok %.0f s after the start: %s", timeout_s, "; ".join(map(str, problems))
        )

    @property
    def state_path(self) -> Path:
        return self.settings.data_dir / STATE_FILE

    def _write_state(self) -> None:
        import json

        state = {
            "pid": os.getpid(),
            "api_url": self.api_url,
            "ray_address": self._ray_head.address if self._ray_head else self.ray_address,
            # Where a tool joining our private head finds its token (RAY_AUTH_TOKEN_PATH).
            "ray_auth_token_path": str(self._ray_head.token_path) if self._ray_head else None,
            "database": "embedded" if self._embedded else "external",
            "simulator": self._simulator is not None,
        }
        self.state_path.write_text(json.dumps(state))

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def stop(self) -> None:
        """Reverse order; every step runs even if an earlier one fails."""
        if self._balancer is not None:
            with _logged("stopping haproxy"):
                self._balancer.stop()
            self._balancer = None
        if self._serve_started:
            with _logged("stopping Serve"):
                from ray import serve

                if self._ray_head is not None:
                    serve.shutdown()
                else:
                    serve.delete(SERVE_APP)
            self._serve_started = False
        if self.recorder is not None and self._ray_head is None:
            with _logged("stopping the recorder"):
                import ray

                ray.kill(self.recorder)  # detached: on a joined cluster it would outlive us
        self.recorder = None
        if self.kis_socket is not None and self._ray_head is None:
            with _logged("stopping the KIS socket actor"):
                import ray

                ray.kill(self.kis_socket)  # detached: on a joined cluster it would outlive us
        self.kis_socket = None
        if self.maintenance is not None and self._ray_head is None:
            with _logged("stopping storage maintenance"):
                import ray

                ray.kill(self.maintenance)  # detached: on a joined cluster it would outlive us
        self.maintenance = None
        with _logged("stopping Ray"):
            import ray

            if ray.is_initialized():
                # A Ray object freed after shutdown makes Ray end the process (exit 1). Collect
                # the garbage while Ray is up, then keep the collector from running one on
                # another thread (the demo-history seeder) before this process exits.
                gc.collect()
                ray.shutdown()
                gc.disable()
        if self._ray_head is not None:
            with _logged("stopping the Ray head"):
                self._ray_head.stop()
            self._ray_head = None
        if self._simulator is not None:
            with _logged("stopping the simulator"):
                self._simulator.stop()
            self._simulator = None
        if self._pg_reaper is not None:
            self._pg_reaper.kill()  # we stop the database ourselves, once
            self._pg_reaper.wait()
            self._pg_reaper = None
        if self._embedded is not None:
            with _logged("stopping the embedded database"):
                self._embedded.stop()
            self._embedded = None
        self.state_path.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def seed_demo_history(settings: Settings, database_url: str, rest_url: str) -> None:
    """Seed demo history from the simulator (blocking; `kisray up` runs it in a thread)."""
    from engine.history.backfill import seed_history

    try:
        reports = asyncio.run(
            seed_history(settings, database_url, rest_url, days=settings.seed_history_days)
        )
    except Exception as exc:
        # Demo history is optional and the recorder repairs minutes later: one line, no
        # traceback, and the stack runs on without it.
        reason = exc.message if isinstance(exc, KisrayError) else f"{type(exc).__name__}: {exc}"
        logger.warning("demo history: not seeded (%s)", (reason.splitlines() or [""])[0][:300])
        return
    logger.info("demo history: %d rows", sum(r.rows_fetched for r in reports))


@contextlib.contextmanager
def _logged(what: str):
    try:
        yield
    except Exception:
        logger.exception("failed while %s", what)
