"""Single-node deployment as the runbook describes it: `ray start --head`, then `serve deploy`
of the committed deploy/serve_config.yaml, then /health, then the node stops cleanly.

The head runs in its own session with `--block`, so terminating that one process stops exactly
this cluster (never `ray stop`: it would stop every Ray cluster on the machine). Every port is a
free one and the node stays on loopback, with a token of its own (api.cli.ray_head.local_ray_env).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from api.cli.ray_head import ensure_auth_token, local_ray_env
from tests.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Head:
    proc: subprocess.Popen
    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    env: dict[str, str]
    log: Path


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate, timeout: float, what: str, head: Head) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.proc.poll() is None, f"ray start exited: {head.log.read_text()[-2000:]}"
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f} s; see {head.log}")


def _processes_under(temp_dir: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if str(temp_dir) in cmdline and proc.pid != os.getpid():
            found.append(f"{proc.pid} {cmdline[:100]}")
    return found


@pytest.fixture
def ray_head(migrated_url: str, kisray_home: Path) -> Iterator[Head]:
    # A short path: Ray's unix sockets live under the temp dir (108-byte limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="krd-", dir="/tmp"))
    gcs_port, dashboard_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KISRAY_", "RAY_"))}
    env.update(local_ray_env(ensure_auth_token(temp_dir)))
    env.update(
        KISRAY_DATABASE_URL=migrated_url,
        KISRAY_DATA_DIR=str(kisray_home / "data"),
        KISRAY_LOG_DIR=str(temp_dir / "kisray-logs"),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}",
        f"--temp-dir={temp_dir}",
        "--num-cpus=1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        "--disable-usage-stats",
    ]
    log = temp_dir / "ray-start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    head = Head(proc, temp_dir, gcs_port, dashboard_port, env, log)
    try:
        yield head
    finally:
        if proc.poll() is None:  # the test failed before its own orderly stop
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_serve_deploy_of_the_committed_config_serves_health(ray_head: Head) -> None:
    head = ray_head
    _wait(lambda: _listening(head.dashboard_port), 90, "the dashboard", head)

    # The committed config, with the HTTP proxy moved to a free loopback port.
    config = yaml.safe_load((ROOT / "deploy" / "serve_config.yaml").read_text())
    api_port = free_port()
    config["http_options"] = {"host": "127.0.0.1", "port": api_port}
    config["grpc_options"]["port"] = free_port()
    deploy_file = head.temp_dir / "serve_config.yaml"
    deploy_file.write_text(yaml.safe_dump(config))
    dashboard = f"http://127.0.0.1:{head.dashboard_port}"
    done = subprocess.run(
        [str(BIN / "serve"), "deploy", str(deploy_file), "--address", dashboard],
        cwd=ROOT,
        env=head.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    health_url = f"http://127.0.0.1:{api_port}/health"
    replies: list[httpx.Response] = []

    def healthy() -> bool:
        try:
            replies.append(httpx.get(health_url, timeout=5))
        except httpx.HTTPError:
            return False
        return replies[-1].status_code == 200

    _wait(healthy, 150, f"{health_url} = 200", head)
    body = replies[-1].json()
    assert body["status"] == "ok"
    assert body["database"]["reachable"] is True  # the session database, via the ray start env

    # Stop exactly this cluster: terminate the blocking `ray start`, which takes the node down.
    head.proc.send_signal(signal.SIGTERM)
    assert head.proc.wait(60) is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        _listening(head.gcs_port) or _listening(api_port) or _processes_under(head.temp_dir)
    ):
        time.sleep(0.5)
    assert not _listening(head.gcs_port)
    assert not _listening(head.dashboard_port)
    assert not _listening(api_port)
    assert _processes_under(head.temp_dir) == []
