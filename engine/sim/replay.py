"""Replays a file of recorded raw frames (one per line) to matching subscribers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from engine.sim.state import SimState

log = logging.getLogger(__name__)

_MAX_GAP_S = 5.0  # never sit longer than this between two recorded frames


def _seconds(hhmmss: str) -> int | None:
    if len(hhmmss) != 6 or not hhmmss.isdigit():
        return None
    return int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:])


def load_frames(path: str) -> list[str]:
    """Plain data frames of a recording; encrypted and control lines are skipped since
    their keys belonged to another session."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.rstrip("\r") for ln in lines if ln.startswith("0|")]


async def run_replay(state: SimState, path: str, *, loop: bool = True) -> None:
    """Pace frames by the HHMMSS of their first record, divided by the speed factor."""
    frames = await asyncio.to_thread(load_frames, path)
    if not frames:
        log.warning("replay file %s holds no plain data frames", path)
        return
    log.info("replaying %d frames from %s", len(frames), path)
    while True:
        prev: int | None = None
        for frame in frames:
            parts = frame.split("|", 3)
            if len(parts) != 4:
                continue
            fields = parts[3].split("^", 2)
            symbol = fields[0]
            at = _seconds(fields[1]) if len(fields) > 1 else None
            if prev is not None and at is not None and at > prev:
                await asyncio.sleep(min(_MAX_GAP_S, (at - prev) / state.config.speed))
            if at is not None:
                prev = at
            if state.is_paused(symbol):
                continue
            count = int(parts[2]) if parts[2].isdigit() else 0
            for session in state.subscribers(parts[1], symbol):
                await state.send(session, frame, count)
            await asyncio.sleep(0)
        if not loop:
            return
