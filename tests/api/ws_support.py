"""What the /ws tests and the fan-out bench share: the `kis-socket` actor against a simulator."""

from __future__ import annotations

import contextlib
import time

import ray

from actors.kis_socket import get_or_create_kis_socket
from actors.names import KIS_SOCKET, NAMESPACE


def kill_socket_actor() -> None:
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(KIS_SOCKET, namespace=NAMESPACE), no_restart=True)


def start_socket_actor(ws_url: str, rest_url: str):
    """A fresh, detached `kis-socket` on this simulator (kill_socket_actor() when done)."""
    kill_socket_actor()
    for _ in range(50):  # the name is freed asynchronously after a kill
        try:
            actor = get_or_create_kis_socket(kis_ws_url=ws_url, kis_rest_url=rest_url)
            break
        except ValueError:
            time.sleep(0.1)
    assert ray.get(actor.wait_connected.remote(20)), "kis-socket did not connect"
    return actor
