"""A private Ray head for `kisray up`, started with `ray start --head --block` in its own session.

Why not `ray.init()`: its node processes share the caller's process group, so a terminal's Ctrl-C
(or a supervisor signalling the group) kills gcs/raylet under us and the orderly shutdown of Serve
then hangs. In its own session the head only ever stops when we stop it: `--block` ties every Ray
process to that one child, and terminating it takes the whole node down.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from api.cli.child_process import die_with_parent
from engine.errors import StartupError

logger = logging.getLogger(__name__)


# A single-node stack keeps all Ray traffic on loopback. Ray resolves 127.0.0.1 to the host's
# external address unless it believes clusters are off (the switch meant for macOS/Windows), which
# only forbids *joining* worker nodes. Token auth stays on, with a token of the stack's own (below).
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
AUTH_TOKEN_FILE = "ray_auth_token"

# On SIGTERM `ray start --block` drains the node for up to 30 s so a load balancer can move
# traffic; ours stops Serve first and its detached actors never return their leases, so the drain
# could only time out.
HEAD_ENV = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def ensure_auth_token(directory: Path) -> Path:
    """The private head's token file in `directory`, created (0600) on first use.

    Only `ray.init()` writes Ray's default ~/.ray/auth_token; `ray start` expects one to exist. A
    token per data directory, handed to every process by RAY_AUTH_TOKEN_PATH, needs nothing in
    HOME and never touches the token of another Ray cluster the user runs.
    """
    path = directory / AUTH_TOKEN_FILE
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))  # the form `ray get-auth-token --generate` writes
    return path


def local_ray_env(token_path: Path) -> dict[str, str]:
    """Environment of every process of a private head: loopback, token auth, this token."""
    return {**LOCAL_RAY_ENV, "RAY_AUTH_TOKEN_PATH": str(token_path)}


def use_local_ray_env(token_path: Path) -> None:
    """Apply local_ray_env to this process (the driver) before ray.init."""
    os.environ.pop("RAY_AUTH_TOKEN", None)  # it would win over the token file
    os.environ.update(local_ray_env(token_path))
    if "ray" in sys.modules:
        # The constant is read at import; a driver that imported Ray already needs it patched.
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def _without_token(environ: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k != "RAY_AUTH_TOKEN"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RayHead:
    def __init__(
        self,
        log_path: Path,
        token_path: Path,
        *,
        num_cpus: int | None = None,
        resources: dict[str, float] | None = None,
    ) -> None:
        self.log_path = log_path
        self.token_path = token_path
        self.num_cpus = num_cpus
        self.resources = resources or {}
        self.port = free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, env: dict[str, str], timeout: float = 60.0) -> None:
        ray_cli = Path(sys.executable).with_name("ray")
        cmd = [
            str(ray_cli),
            "start",
            "--head",
            "--block",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        if self.resources:
            cmd.append(f"--resources={json.dumps(self.resources)}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it for its lifetime
        self._proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**_without_token(os.environ), **local_ray_env(self.token_path), **HEAD_ENV, **env},
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        self._wait_until_listening(timeout)
        logger.info("Ray head started at %s (pid %s)", self.address, self._proc.pid)

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StartupError(
                    f"ray start exited with {self._proc.returncode}; see {self.log_path}"
                )
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise StartupError(f"Ray head did not come up within {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("Ray head did not stop within %.0f s; killing it", timeout)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        logger.info("Ray head stopped")
