"""The direct-ingress socket binds with SO_REUSEADDR (api.ingress.bind_with_reuse_addr), on this
Ray: Serve's own server start, wrapped, in this process; no cluster needed.

A Ray that renames the private names the wrapper relies on fails here, not silently in production.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from ray.serve._private import http_util, replica
from ray.serve.config import HTTPOptions

from api.ingress import bind_with_reuse_addr
from tests.conftest import free_port


async def _app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _serve(port: int, start=None):
    """What a replica does: Serve's start, as the replica module calls it."""
    start = start or replica.start_asgi_http_server
    task, server = await start(
        _app,
        HTTPOptions(host="127.0.0.1", port=port),
        event_loop=asyncio.get_running_loop(),
        enable_so_reuseport=False,
    )
    for _ in range(500):  # listening once uvicorn's startup ran
        if server.started:
            return task, server
        await asyncio.sleep(0.01)
    raise AssertionError("the server did not start within 5 s")


async def _leave_time_wait(port: int) -> None:
    """A client whose connection the server closes first: the server side lingers in TIME_WAIT."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    await reader.read()  # the server answered and closed
    writer.close()
    await writer.wait_closed()


@pytest.fixture
def unwrapped():
    """The replica module's server start as Ray ships it, restored after the test."""
    current = replica.start_asgi_http_server
    yield getattr(current, "__wrapped__", current)
    replica.start_asgi_http_server = current


async def test_a_port_left_in_time_wait_binds_again_at_once(unwrapped) -> None:
    assert bind_with_reuse_addr()
    assert bind_with_reuse_addr()  # idempotent: one wrapper however many replicas start
    assert replica.start_asgi_http_server.__wrapped__ is unwrapped
    port = free_port()
    task, server = await _serve(port)
    [listener] = server.servers[0].sockets
    assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    # Not SO_REUSEPORT: no second process may listen on the port alongside the replica.
    assert not listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    assert http_util.set_socket_reuse_port.__name__ == "set_socket_reuse_port"  # put back
    await _leave_time_wait(port)
    server.should_exit = True
    await task

    task, server = await _serve(port)  # the replacement replica, at once
    server.should_exit = True
    await task


async def test_without_the_wrapper_the_same_rebind_fails(unwrapped) -> None:
    """The cause of issue 15, kept visible: Serve's bind alone fails while TIME_WAIT lasts."""
    port = free_port()
    task, server = await _serve(port, unwrapped)
    await _leave_time_wait(port)
    server.should_exit = True
    await task
    with pytest.raises(RuntimeError, match="Failed to bind") as failure:
        await _serve(port, unwrapped)
    assert isinstance(failure.value.__cause__, OSError)
