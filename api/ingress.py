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
    }
