"""A throwaway PostgreSQL 15 + TimescaleDB cluster for one test session.

`make test` installs TimescaleDB into Debian's PostgreSQL 15 (`make timescaledb`); this module
only runs what is installed: `initdb` into a temporary directory, a server on a free loopback
port with the extension preloaded, and `pg_ctl stop` + removal at the end. PostgreSQL refuses
to run as root, so as root the server runs as the unprivileged `postgres` user.

`find_unavailable_reason()` says why no server can be started here (the tests then skip with
that reason, or fail when KISRAY_TEST_REQUIRE_TIMESCALE is set, as in CI).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# What the TimescaleDB tests run on; the compose file pins the same pair (tests/deploy).
TESTED_TIMESCALEDB = "2.28.3"
PG_MAJOR = "15"
PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
SERVER_USER = "postgres"  # who runs the server when the tests run as root

PRELOAD = ("shared_preload_libraries = 'timescaledb'", "timescaledb.telemetry_level = off")
SETTINGS = (
    "listen_addresses = '127.0.0.1'",
    # Buckets and expected values in the tests are UTC.
    "timezone = 'UTC'",
    # Every test database with the extension runs a job scheduler of its own: room for them.
    "max_worker_processes = 64",
    "timescaledb.max_background_workers = 48",
    "max_connections = 200",
    # Thrown away after the session: durability buys nothing and costs the tests time.
    "fsync = off",
    "synchronous_commit = off",
    "full_page_writes = off",
)


def _pg_config() -> Path | None:
    candidate = PG_BIN / "pg_config"
    return candidate if candidate.exists() else None


def find_unavailable_reason() -> str | None:
    """None when a TimescaleDB server can be started here, else why not."""
    if not (PG_BIN / "postgres").exists():
        return f"PostgreSQL {PG_MAJOR} is not installed ({PG_BIN}/postgres missing)"
    pg_config = _pg_config()
    sharedir = (
        subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True).stdout
        if pg_config
        else "/usr/share/postgresql/15"
    ).strip()
    if not (Path(sharedir) / "extension" / "timescaledb.control").exists():
        return (
            f"TimescaleDB is not installed for PostgreSQL {PG_MAJOR} "
            "(`make test` installs it when run as root on x86_64)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no '{SERVER_USER}' user to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TimescaleServer:
    """Start with `start()`, stop and remove with `stop()`; `url` points at database postgres.

    `preload=False` leaves TimescaleDB out of shared_preload_libraries: the package installed
    but not enabled, the state a server is in right after the package install.
    """

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kisray-tsdb-")))
    port: int = field(default_factory=_free_port)
    preload: bool = True
    _started: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = [str(PG_BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{log}"
            )

    def start(self) -> TimescaleServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, SERVER_USER, SERVER_USER)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C.UTF-8",
        )  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            preload = PRELOAD if self.preload else ()
            conf.write("\n".join((*SETTINGS, *preload, f"port = {self.port}",
                                  f"unix_socket_directories = '{self.root}'")) + "\n")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self._started = True
        return self

    def stop(self) -> None:
        try:
            if self._started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
                self._started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
