"""Asking a named actor how it is, for /health: one call, bounded, never raising."""

from __future__ import annotations

import asyncio

import ray

NAMESPACE = "kisray"
NOT_STARTED = "not_started"
UNREACHABLE = "unreachable"


async def probe(name: str, method: str, timeout_s: float) -> dict:
    """The named actor's answer to `method()` (a dict); `{"state": "not_started"}` when no such
    actor runs, `{"state": "unreachable", "error": ...}` when it does not answer in time."""
    try:
        handle = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return {"state": NOT_STARTED}
    try:
        return dict(await asyncio.wait_for(getattr(handle, method).remote(), timeout_s))
    except (TimeoutError, ray.exceptions.RayError) as exc:
        return {"state": UNREACHABLE, "error": type(exc).__name__}
