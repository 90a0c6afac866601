"""The haproxy configuration `kisray up` writes for KISRAY_REPLICAS > 1 (api/cli/balancer.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from api.cli.balancer import BalancerConfig, unavailable_response
from engine.config import Settings

HAPROXY = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/usr/local/sbin")


def test_replica_ports_are_the_api_port_alone_or_a_range_with_a_spare() -> None:
    assert Settings(port=9000).replica_ports == range(9000, 9001)
    assert Settings(port=9000, replicas=3).replica_ports == range(9001, 9005)
    assert Settings(port=9000, replicas=2, replica_port=9100).replica_ports == range(9100, 9103)


def test_every_port_of_the_range_is_a_checked_server(tmp_path: Path) -> None:
    config = BalancerConfig("0.0.0.0", 9000, range(9001, 9004), tmp_path / "503.http").render()
    servers = [line.split()[2] for line in config.splitlines() if line.strip().startswith("server")]
    assert servers == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    assert "bind 0.0.0.0:9000" in config and "balance leastconn" in config
    assert "timeout tunnel 1h" in config  # an open WebSocket is not cut after a minute


def test_the_503_is_our_envelope() -> None:
    head, body = unavailable_response().split("\r\n\r\n")
    assert head.startswith("HTTP/1.1 503 ") and f"Content-Length: {len(body)}" in head
    assert json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"


@pytest.mark.skipif(HAPROXY is None, reason="no haproxy (make haproxy installs Debian's)")
def test_haproxy_accepts_the_configuration(tmp_path: Path) -> None:
    errorfile = tmp_path / "503.http"
    errorfile.write_text(unavailable_response())
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(BalancerConfig("127.0.0.1", 9000, range(9001, 9003), errorfile).render())
    assert HAPROXY is not None
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
