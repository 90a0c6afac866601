"""The Serve replica's inter-deployment gRPC server binds the node IP, not every interface
(api/replica_grpc.py): the wrapper on its own, then the listening sockets of a running replica."""

from __future__ import annotations

import logging

import psutil
import pytest
from ray.serve._private import replica

from api import replica_grpc
from api.replica_grpc import bind_replica_grpc_to_node_ip, narrowed

WILDCARD_IPS = {"0.0.0.0", "::"}


def test_only_a_wildcard_host_is_narrowed() -> None:
    assert narrowed("[::]:0", "127.0.0.1") == "127.0.0.1:0"
    assert narrowed("0.0.0.0:9000", "10.0.0.5") == "10.0.0.5:9000"
    assert narrowed("[::]:0", "fd00::5") == "[fd00::5]:0"
    assert narrowed("10.0.0.7:0", "127.0.0.1") == "10.0.0.7:0"
    assert narrowed("[::]:0", "") == "[::]:0"


class FakeRayBind:
    """Stands in for Ray's function: records addresses, port 0 (not bound) for `refused` ones."""

    def __init__(self) -> None:
        self.bound: list[str] = []
        self.refused: set[str] = set()

    def __call__(self, server: object, address: str) -> int:
        self.bound.append(address)
        return 0 if address in self.refused else 4321


@pytest.fixture
def ray_bind(monkeypatch: pytest.MonkeyPatch) -> FakeRayBind:
    fake = FakeRayBind()
    monkeypatch.setattr(replica, "add_port_to_grpc_server", fake)  # restored afterwards
    return fake


def test_the_wrapper_binds_the_node_ip_once(ray_bind: FakeRayBind) -> None:
    assert bind_replica_grpc_to_node_ip(lambda: "127.0.0.1")
    assert bind_replica_grpc_to_node_ip(lambda: "10.9.9.9")  # already in place: not wrapped twice
    assert replica.add_port_to_grpc_server(object(), "[::]:0") == 4321
    assert ray_bind.bound == ["127.0.0.1:0"]


def test_the_wrapper_falls_back_to_rays_address(
    ray_bind: FakeRayBind, caplog: pytest.LogCaptureFixture
) -> None:
    ray_bind.refused.add("192.0.2.1:0")
    assert bind_replica_grpc_to_node_ip(lambda: "192.0.2.1")
    with caplog.at_level(logging.INFO, logger=replica_grpc.__name__):
        assert replica.add_port_to_grpc_server(object(), "[::]:0") == 4321
    assert ray_bind.bound == ["192.0.2.1:0", "[::]:0"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_without_rays_function_nothing_is_patched(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(replica, "add_port_to_grpc_server")
    with caplog.at_level(logging.INFO, logger=replica_grpc.__name__):
        assert not bind_replica_grpc_to_node_ip(lambda: "127.0.0.1")
    assert len(caplog.records) == 1 and "keeps Ray's own address" in caplog.text
    assert not hasattr(replica, "add_port_to_grpc_server")


def listening(pid: int) -> list:
    return [
        c.laddr
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


def replica_pid(http_port: int) -> int:
    """The replica serving `http_port` (other sessions on this machine run replicas too)."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if not any("ServeReplica:" in part for part in proc.info["cmdline"] or ()):
            continue
        try:
            if any(a.port == http_port for a in listening(proc.info["pid"])):
                return proc.info["pid"]
        except psutil.Error:
            continue
    raise AssertionError(f"no Serve replica listens on {http_port}")


@pytest.mark.slow
def test_a_running_replica_listens_on_no_wildcard_address(serve_url: str) -> None:
    addresses = listening(replica_pid(int(serve_url.rsplit(":", 1)[1])))
    assert len(addresses) >= 2, addresses  # at least the HTTP server and the gRPC server
    assert not [a for a in addresses if a.ip in WILDCARD_IPS], addresses
