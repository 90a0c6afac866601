"""Asking a named actor how it is, for /health: one call, bounded, never raising."""

from __future__ import annotations

import asyncio

import ray

from actors.names import NAMESPACE

NOT_STARTED = "not_started"
UNREACHABLE = "unreachable"


async def probe(name: str, method: str, timeout_s: float) -> dict:
    """The named actor's answer to `method()` (a dict); `{"state": "not_started"}` when no such
    actor runs, `{"state": "unreachable", "error": ...}` when it does not answer in time."""
    try:
        async with asyncio.timeout(timeout_s):
            try:
                # Off the event loop: while Ray declares a node dead this lookup can block for
                # seconds, and /health must still answer.
                handle = await asyncio.to_thread(ray.get_actor, name, namespace=NAMESPACE)
            except ValueError:
                return {"state": NOT_STARTED}
            return dict(await getattr(handle, method).remote())
    except (TimeoutError, ray.exceptions.RayError) as exc:
        return {"state": UNREACHABLE, "error": type(exc).__name__}
