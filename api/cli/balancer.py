"""Several Serve replicas behind the one KISRAY_PORT: haproxy in front of direct ingress.

With direct ingress every replica runs its own server on a port of its own (api/ingress.py), so
more than one replica needs a load balancer in front. `kisray up` runs Debian's haproxy with the
static configuration below: it listens on KISRAY_PORT and spreads connections over the replicas'
port range, by fewest connections (a WebSocket is one long connection). A static file means no
reloads, so an open WebSocket is never cut by one; ports of the range no replica holds stay DOWN.

Why not Serve's own HAProxy mode (RAY_SERVE_ENABLE_HA_PROXY): it rewrites and reloads its
configuration at every replica change, and each reload force-stops the old process, with its
open WebSockets, `hard-stop-after` (120 s) later; its plain-text error pages also replace ours.
Measured behaviour of this setup is in docs/deploy.md "Several replicas".
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from api.cli.child_process import start_child, stop_child, wait_listening
from engine.errors import StartupError

logger = logging.getLogger(__name__)

# Replica health: Serve's direct-ingress server answers this itself. Checked every second; three
# failed checks in a row take a replica out. Not faster, nor on one failed connection: a replica
# busy with a thousand tabs answers a check late, and marking it down then sent the next tabs a
# 503 (bench_scale, 1,000 tabs on 2 replicas). A killed replica refuses connections, and each
# refused connect is retried on another replica at once (retry-on, redispatch), so new tabs do
# not wait for the checks.
HEALTH_PATH = "/-/healthz"
SERVER_CHECKS = "check inter 1s fastinter 500ms downinter 1s fall 3 rise 1"
# A 503 from haproxy itself (no replica up) in the API's error envelope, not haproxy's HTML.
UNAVAILABLE_BODY = (
    '{"error":{"code":"SERVICE_UNAVAILABLE","message":"no API replica is answering; '
    'retry shortly"}}'
)


@dataclass(frozen=True)
class BalancerConfig:
    host: str  # where clients connect (KISRAY_HOST)
    port: int  # KISRAY_PORT
    replica_ports: range  # the replicas' direct-ingress port range
    errorfile: Path

    def render(self) -> str:
        servers = "\n".join(
            f"    server replica{i} 127.0.0.1:{p}" for i, p in enumerate(self.replica_ports, 1)
        )
        # No global maxconn: haproxy derives it from the open-files limit it is given.
        return f"""\
defaults
    mode http
    option http-server-close
    option forwardfor
    option redispatch 1
    retry-on conn-failure empty-response
    retries 3
    timeout connect 2s
    timeout check 3s
    timeout http-request 10s
    timeout client 60s
    timeout server 60s
    # An upgraded WebSocket is a tunnel: a quiet tab (no subscription) may stay an hour.
    timeout tunnel 1h
    errorfile 503 {self.errorfile}

frontend api
    bind {self.host}:{self.port}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk GET {HEALTH_PATH}
    http-check expect status 200
    default-server {SERVER_CHECKS}
{servers}
"""


def unavailable_response() -> str:
    return (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n"
        f"Content-Length: {len(UNAVAILABLE_BODY)}\r\n\r\n{UNAVAILABLE_BODY}"
    )


def find_haproxy() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise StartupError(
            "KISRAY_REPLICAS > 1 needs haproxy in front of the replicas, and none is installed "
            "(Debian: apt-get install haproxy; or run with KISRAY_REPLICAS=1)"
        )
    return found


class Balancer:
    """haproxy as a child process of `kisray up`, configured once."""

    def __init__(self, config: BalancerConfig, workdir: Path, log_path: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        binary = find_haproxy()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.errorfile.write_text(unavailable_response())
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(self.config.render())
        check = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True)
        if check.returncode != 0:
            raise StartupError(f"haproxy refused {cfg}: {check.stderr.decode()[-500:]}")
        # -db: stay in the foreground, so it is our child and stops with us.
        self._proc = start_child([binary, "-db", "-f", str(cfg)], self.log_path)
        host, port = _connect_host(self.config.host), self.config.port
        if wait_listening(self._proc, host, port, timeout, f"haproxy (see {self.log_path})"):
            logger.info(
                "haproxy on port %s in front of replica ports %s-%s (pid %s)",
                port,
                self.config.replica_ports.start,
                self.config.replica_ports.stop - 1,
                self._proc.pid,
            )
            return
        self.stop()
        raise StartupError(f"haproxy did not listen on {self.config.port} within {timeout:.0f} s")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if stop_child(proc, signal.SIGTERM, timeout):  # plain stop: nothing left to finish
            logger.info("haproxy stopped")


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host
