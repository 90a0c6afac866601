"""The recorder's write backlog: bounded in memory, spilled to files past the bound.

Each entry is one flush (`FlushBatch`: the bars it wrote and the checkpoints that go with them).
While the database is down, flushes queue here in order and are written, oldest first, once it is
back. Past `max_rows` bars in memory, new entries go to append-only JSON-lines segment files under
the spool directory instead; once spilling has begun every later entry goes to a file too, so the
order never changes. A segment file is deleted only after its last entry was written, so a crash
replays at most part of one segment again — harmless, because writes are idempotent upserts and
an older entry replayed first is overwritten by the newer ones that follow it.

A spool directory left by an earlier process is picked up on start (its entries are the oldest).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.domain.bars import MinuteBar, Price
from engine.recorder.builder import Checkpoint

logger = logging.getLogger(__name__)

SEGMENT_PREFIX = "spool-"
SEGMENT_SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class FlushBatch:
    """One flush of the recorder: bars to upsert and the checkpoints to store with them."""

    bars: tuple[MinuteBar, ...]
    checkpoints: tuple[Checkpoint, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> int:
        return len(self.bars) + len(self.checkpoints)


@dataclass(frozen=True, slots=True)
class Backlog:
    batches: int
    rows: int
    spilled_batches: int
    spilled_bytes: int

    def as_dict(self) -> dict[str, int]:
        return {
            "batches": self.batches,
            "rows": self.rows,
            "spilled_batches": self.spilled_batches,
            "spilled_bytes": self.spilled_bytes,
        }


def _price(value: Price) -> int | str:
    """Exact in JSON: whole won as int, anything else as its decimal string."""
    return value if isinstance(value, int) else str(value)


def _unprice(value: int | str) -> Decimal | int:
    return value if isinstance(value, int) else Decimal(value)


def _bar_row(bar: MinuteBar) -> list[object]:
    return [
        bar.symbol,
        int(bar.ts.timestamp()),
        _price(bar.open),
        _price(bar.high),
        _price(bar.low),
        _price(bar.close),
        bar.volume,
    ]


def _row_bar(row: list[Any]) -> MinuteBar:
    symbol, epoch, o, h, low, c, v = row
    return MinuteBar(
        symbol,
        datetime.fromtimestamp(epoch, UTC),
        _unprice(o),
        _unprice(h),
        _unprice(low),
        _unprice(c),
        int(v),
    )


def encode_batch(batch: FlushBatch) -> str:
    return json.dumps(
        {
            "bars": [_bar_row(b) for b in batch.bars],
            "checkpoints": [
                [
                    c.symbol,
                    c.trade_date,
                    c.cum_volume,
                    _bar_row(c.forming) if c.forming is not None else None,
                    c.open_cum,
                    c.close_cum,
                ]
                for c in batch.checkpoints
            ],
        },
        separators=(",", ":"),
    )


def decode_batch(line: str) -> FlushBatch:
    data = json.loads(line)
    return FlushBatch(
        tuple(_row_bar(r) for r in data["bars"]),
        tuple(
            Checkpoint(s, d, int(cum), _row_bar(f) if f else None, int(oc), int(cc))
            for s, d, cum, f, oc, cc in data["checkpoints"]
        ),
    )


class BarSpool:
    """FIFO of FlushBatch entries: memory up to `max_rows` rows, files beyond."""

    def __init__(self, directory: Path, *, max_rows: int = 50_000, segment_batches: int = 256):
        self.directory = directory
        self.max_rows = max_rows
        self.segment_batches = segment_batches
        self._memory: deque[FlushBatch] = deque()
        self._memory_rows = 0
        # Entries loaded from the oldest segment file, and how many of them are still unwritten.
        self._loaded_segment: Path | None = None
        self._loaded_left = 0
        self._segments: list[Path] = []  # on disk, oldest first, not yet loaded
        self._writing: Path | None = None
        self._writing_count = 0
        self._next_segment = 0
        self._spilled_batches = 0
        self._resume()

    def _resume(self) -> None:
        if not self.directory.exists():
            return
        found = sorted(self.directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"))
        for path in found:
            count = sum(1 for line in path.read_text().splitlines() if line.strip())
            self._spilled_batches += count
            self._next_segment = max(self._next_segment, _segment_number(path) + 1)
        self._segments = found
        if found:
            logger.warning(
                "spool: resuming %d unwritten flushes from %s",
                self._spilled_batches,
                self.directory,
            )

    # -- queue ----------------------------------------------------------------------------------

    def push(self, batch: FlushBatch) -> None:
        spilling = bool(self._segments) or self._writing is not None
        if not spilling and self._memory_rows + batch.rows <= self.max_rows:
            self._memory.append(batch)
            self._memory_rows += batch.rows
            return
        self._spill(batch)

    def _spill(self, batch: FlushBatch) -> None:
        if self._writing is None or self._writing_count >= self.segment_batches:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._writing = self.directory / (
                f"{SEGMENT_PREFIX}{self._next_segment:08d}{SEGMENT_SUFFIX}"
            )
            self._next_segment += 1
            self._writing_count = 0
            self._segments.append(self._writing)
            logger.warning("spool: memory bound reached, spilling to %s", self._writing)
        with self._writing.open("a", encoding="utf-8") as out:
            out.write(encode_batch(batch) + "\n")
        self._writing_count += 1
        self._spilled_batches += 1

    def peek(self) -> FlushBatch | None:
        """The oldest unwritten entry, or None when the spool is empty."""
        if not self._memory and self._segments:
            self._load_oldest_segment()
        return self._memory[0] if self._memory else None

    def pop(self) -> None:
        """Drop the oldest entry after it was written."""
        batch = self._memory.popleft()
        self._memory_rows -= batch.rows
        if self._loaded_segment is not None:
            self._loaded_left -= 1
            self._spilled_batches -= 1
            if self._loaded_left == 0:
                self._loaded_segment.unlink(missing_ok=True)
                self._loaded_segment = None

    def _load_oldest_segment(self) -> None:
        path = self._segments.pop(0)
        if path == self._writing:
            self._writing = None  # later spills start a new segment
        batches: list[FlushBatch] = []
        damaged = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                batches.append(decode_batch(line))
            except (ValueError, KeyError, TypeError) as exc:
                # A torn last line from a crash mid-write, or damage: keep the file for a human.
                logger.error("spool: unreadable entry %s:%d skipped (%s)", path, number, exc)
                self._spilled_batches -= 1
                damaged = True
        if damaged:
            shutil.copyfile(path, path.with_suffix(".bad"))
        if not batches:
            path.unlink(missing_ok=True)
            if self._segments:
                self._load_oldest_segment()
            return
        self._memory.extend(batches)
        self._memory_rows += sum(b.rows for b in batches)
        self._loaded_segment = path
        self._loaded_left = len(batches)

    def reject(self, batch: FlushBatch) -> Path:
        """Keep an entry the database refused in `rejected.jsonl`, for a human to look at."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "rejected.jsonl"
        with path.open("a", encoding="utf-8") as out:
            out.write(encode_batch(batch) + "\n")
        return path

    def __len__(self) -> int:
        unloaded = self._spilled_batches - (self._loaded_left if self._loaded_segment else 0)
        return len(self._memory) + unloaded

    def backlog(self) -> Backlog:
        spilled_bytes = sum(p.stat().st_size for p in self._segments if p.exists())
        return Backlog(
            batches=len(self),
            rows=self._memory_rows,
            spilled_batches=self._spilled_batches,
            spilled_bytes=spilled_bytes,
        )


def _segment_number(path: Path) -> int:
    try:
        return int(path.stem.removeprefix(SEGMENT_PREFIX))
    except ValueError:
        return 0
