"""Binds the Serve replica's inter-deployment gRPC server to the node's IP, not every interface.

Ray 2.60's replica starts that server in `_on_initialized` with
`add_port_to_grpc_server(self._server, "[::]:0")` (ray/serve/_private/replica.py): it listens on
all interfaces while the rest of the stack listens on loopback, and Serve has no option for it.
Handles reach a replica at the node IP the replica reports (`ray.util.get_node_ip_address()`),
so binding that address loses nothing.

The fix replaces the name `add_port_to_grpc_server` in Ray's replica module with a wrapper that
swaps the wildcard host for the node IP. It must run in the replica process before Serve calls
`_on_initialized`, i.e. in the deployment's constructor. If Ray changes and the name is gone,
nothing is patched and one line says so; if the node IP cannot be bound, the wrapper falls back
to Ray's own address (one warning), so a replica never fails to start because of this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

RAY_MODULE = "ray.serve._private.replica"
RAY_FUNCTION = "add_port_to_grpc_server"
_WILDCARDS = ("[::]", "0.0.0.0", "*", "")
_MARK = "_kisray_binds_node_ip"


def narrowed(address: str, host: str) -> str:
    """`[::]:0` → `HOST:0` (an IPv6 host in brackets); any other address stays as it is."""
    wildcard, sep, port = address.rpartition(":")
    if not sep or wildcard not in _WILDCARDS or not host:
        return address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def bind_replica_grpc_to_node_ip(host: Callable[[], str] = _node_ip) -> bool:
    """Patch Ray's replica module in this process; True when the wrapper is in place."""
    import importlib

    try:
        module = importlib.import_module(RAY_MODULE)
    except ImportError:
        module = None
    original = getattr(module, RAY_FUNCTION, None)
    if module is None or not callable(original):
        logger.info(
            "Ray has no %s.%s: the replica's gRPC listener keeps Ray's own address",
            RAY_MODULE,
            RAY_FUNCTION,
        )
        return False
    if getattr(original, _MARK, False):
        return True

    def add_port(server, address):  # the signature of Ray's function
        wanted = narrowed(address, host())
        if wanted == address:
            return original(server, address)
        reason: Exception | None
        try:
            port = original(server, wanted)
        except Exception as exc:  # grpc raises RuntimeError when it cannot bind
            port, reason = 0, exc
        else:
            reason = None
        if port:
            logger.info("replica gRPC server bound to %s (port %d)", wanted, port)
            return port
        logger.warning(
            "replica gRPC server: cannot bind %s (%s); using Ray's %s", wanted, reason, address
        )
        return original(server, address)

    setattr(add_port, _MARK, True)
    setattr(module, RAY_FUNCTION, add_port)
    return True
