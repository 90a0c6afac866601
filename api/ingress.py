"""Where clients connect: the Serve replica's own port (direct ingress) on a private Ray head.

Through Serve's proxy every WebSocket frame is a Ray streaming item; on this 2-core machine that
hop cost 1.5–2× the CPU and doubled fan-out p99 (docs/fanout.md). With direct ingress the replica
runs its own uvicorn server, so `kisray up` pins that server to KISRAY_PORT — the one URL users
get — and moves the proxy (which Serve still starts) to a private port.

Serve reads these settings when its controller and replicas import it, so they must be in the
environment of the `ray start` that launches the node. Pinning the range to exactly one port only
works with one ingress replica per node, which is what a single-node stack runs.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def direct_ingress_env(port: int, ports: int = 1) -> dict[str, str]:
    """Environment for a Ray node whose ingress replicas listen on `port` … `port + ports - 1`."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + ports),  # exclusive
        # Serve holds a released port back for a load balancer to notice; none sits in front of
        # us, and a restarted replica must get the same port back at once.
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
        # Likewise no load balancer needs time to deregister a stopping replica.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
        # Run the app on the replica's server loop. In its own thread (Serve's default) every
        # ASGI message crosses an unbounded queue, so `send` never waits for a slow client: the
        # frames of a tab that stopped reading piled up in the replica until uvicorn's keepalive
        # cut it (40 s), and the outbox bound (SLOW_CONSUMER) never saw the back-pressure.
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    }


def serves_directly() -> bool:
    """Whether this process's Ray node was started with direct ingress (a joined cluster whose
    head exported `direct_ingress_env`, as deploy/docker/head.sh does)."""
    return os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1"


# uvicorn options for the replica's HTTP server, which Serve builds without a way to pass them.
HTTP_SERVER_DEFAULTS: dict[str, object] = {
    # h11, not httptools (uvicorn's "auto"): httptools answers a request target over 64 KiB with
    # its own plain-text 400 (no envelope, no X-Request-ID) and takes headers of any size. h11
    # hands the app any request head up to the bound below, so api.middleware.RequestLimits
    # answers 414/431 in the envelope; only a head past it gets the server's 400. Parsing costs
    # ~35 µs more a request, nothing next to a /candles query.
    "http": "h11",
    "h11_max_incomplete_event_size": 256 * 1024,
}
_server_defaults: dict[str, object] = {}


def set_server_defaults(**options: object) -> None:
    """Defaults for every uvicorn Config this process builds from now on — in a replica, before
    Serve starts its server (after the deployment's constructor). Options passed explicitly win."""
    import uvicorn.config

    _server_defaults.update(options)
    config = uvicorn.config.Config
    if getattr(config.__init__, "_kisray_defaults", False):
        return  # installed once; later calls only change the dict
    original = config.__init__

    @functools.wraps(original)
    def init(self, *args, **kwargs) -> None:
        for name, value in _server_defaults.items():
            kwargs.setdefault(name, value)
        original(self, *args, **kwargs)

    init._kisray_defaults = True  # type: ignore[attr-defined]
    config.__init__ = init  # type: ignore[method-assign]  # the patch is the point


def set_ws_compression(enabled: bool) -> None:
    """permessage-deflate for the WebSockets of this process's HTTP servers.

    uvicorn enables it by default. It costs ~0.14 ms of CPU per 25 KB frame (~8× fewer bytes):
    at 2,000 frames/s, 29 % of a core, three quarters of the replica's CPU in the fan-out bench
    (docs/fanout.md).
    """
    set_server_defaults(ws_per_message_deflate=enabled)


def bind_with_reuse_addr() -> bool:
    """Make this replica's direct-ingress server bind its port with SO_REUSEADDR (issue 15).

    Serve creates and binds that socket itself and sets no option on it. On Linux a port whose
    last listener lacked SO_REUSEADDR cannot be bound again — not even with the option — while
    any of that listener's connections sit in TIME_WAIT (60 s). So after the replica was killed,
    or `kisray up` stopped with clients connected, every bind of KISRAY_PORT failed for a minute:
    Serve blocked the one port of our range (NoAvailablePortError) and `kisray up` refused to
    start. uvicorn sets SO_REUSEADDR on the sockets it binds itself; this does the same. Not
    SO_REUSEPORT: that would let a second process listen on the port and take half its clients.

    Serve's only hook on that socket is the reuse-port setter its server start calls when asked
    to; for our call it sets SO_REUSEADDR alone. These are Serve's private names, so they are
    checked first: on a Ray that renamed them this logs a warning and changes nothing (restarts
    then wait out TIME_WAIT); tests/api/test_ingress_reuse.py fails on such a Ray.
    """
    # Imported by name, as Any: private modules whose names may move (checked below).
    http_util: Any
    replica: Any
    try:
        http_util = importlib.import_module("ray.serve._private.http_util")
        replica = importlib.import_module("ray.serve._private.replica")
    except ImportError:
        http_util = replica = None
    start = getattr(replica, "start_asgi_http_server", None)
    setter = getattr(http_util, "set_socket_reuse_port", None)
    if start is None or setter is None or not _takes_reuse_port_flag(start):
        logger.warning(
            "this Ray's Serve has no known hook for its direct-ingress socket; a restarted "
            "replica may not bind its port until TIME_WAIT ends (~60 s)"
        )
        return False
    if getattr(start, "kisray_reuse_addr", False):
        return True  # already wrapped: a second replica constructor in the same process

    @functools.wraps(start)
    async def start_with_reuse_addr(*args, enable_so_reuseport: bool = False, **kwargs):
        if enable_so_reuseport:  # Serve asked for SO_REUSEPORT itself: leave that alone
            return await start(*args, enable_so_reuseport=True, **kwargs)
        # The server start binds before its first await, so the swap is seen by this call only.
        http_util.set_socket_reuse_port = _set_reuse_addr
        try:
            return await start(*args, enable_so_reuseport=True, **kwargs)
        finally:
            http_util.set_socket_reuse_port = setter

    start_with_reuse_addr.kisray_reuse_addr = True  # type: ignore[attr-defined]
    replica.start_asgi_http_server = start_with_reuse_addr
    return True


def _takes_reuse_port_flag(function: Callable[..., Any]) -> bool:
    try:
        return "enable_so_reuseport" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _set_reuse_addr(sock: socket.socket) -> bool:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return True


if __name__ == "__main__":  # `export $(python -m api.ingress 8000)` before `ray start --head`
    from engine.config import Settings

    # KISRAY_REPLICAS > 1 (from the environment): the replicas' own range behind haproxy.
    ports = Settings(port=int(sys.argv[1])).replica_ports
    for key, value in direct_ingress_env(ports.start, len(ports)).items():
        print(f"{key}={value}")
