"""The recorder's write backlog: order, the memory bound, spilling to files, resuming."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from engine.domain.bars import MinuteBar
from engine.recorder.builder import Checkpoint
from engine.recorder.spool import BarSpool, FlushBatch, decode_batch, encode_batch

T0 = datetime(2025, 3, 12, 0, 0, tzinfo=UTC)


def batch(i: int, bars: int = 3) -> FlushBatch:
    rows = tuple(
        MinuteBar("005930", T0 + timedelta(minutes=i * bars + k), 100 + i, 101 + i, 99, 100, i + k)
        for k in range(bars)
    )
    forming = MinuteBar("005930", T0 + timedelta(minutes=999), 5, 6, 4, 5, 7)
    return FlushBatch(rows, (Checkpoint("005930", "20250312", 1000 + i, forming, 10, 20),))


def drain(spool: BarSpool) -> list[FlushBatch]:
    out = []
    while (item := spool.peek()) is not None:
        out.append(item)
        spool.pop()
    return out


def test_round_trip_keeps_decimals_and_checkpoints() -> None:
    b = FlushBatch(
        (MinuteBar("Q50000", T0, Decimal("10.5"), Decimal("11"), Decimal("10"), 10, 3),),
        (Checkpoint("Q50000", "20250312", 42, None, 0, 0),),
    )
    assert decode_batch(encode_batch(b)) == b
    assert decode_batch(encode_batch(batch(3))) == batch(3)


def test_within_the_bound_nothing_touches_disk(tmp_path: Path) -> None:
    spool = BarSpool(tmp_path / "spool", max_rows=100)
    for i in range(10):
        spool.push(batch(i))
    assert spool.backlog().spilled_batches == 0
    assert not (tmp_path / "spool").exists()
    assert drain(spool) == [batch(i) for i in range(10)]


def test_past_the_bound_entries_spill_in_order_and_come_back(tmp_path: Path) -> None:
    spool = BarSpool(tmp_path / "spool", max_rows=20, segment_batches=4)
    for i in range(30):
        spool.push(batch(i))
    backlog = spool.backlog()
    assert backlog.batches == 30
    assert backlog.spilled_batches == 25  # 5 batches of 4 rows fit in memory
    assert backlog.spilled_bytes > 0
    assert len(list((tmp_path / "spool").glob("spool-*.jsonl"))) == 7
    got = []
    for _ in range(12):  # writing resumes while new flushes still arrive
        got.append(spool.peek())
        spool.pop()
    for i in range(30, 35):
        spool.push(batch(i))
    got.extend(drain(spool))
    assert got == [batch(i) for i in range(35)]
    assert list((tmp_path / "spool").glob("spool-*")) == []
    assert len(spool) == 0


def test_a_new_process_resumes_the_spilled_entries(tmp_path: Path) -> None:
    first = BarSpool(tmp_path / "spool", max_rows=0, segment_batches=3)
    for i in range(7):
        first.push(batch(i))
    first.peek()
    first.pop()  # batch 0 written; its segment stays until 1 and 2 are written too
    second = BarSpool(tmp_path / "spool", max_rows=100, segment_batches=3)
    assert len(second) == 7
    second.push(batch(7))  # goes after the resumed entries, not before
    assert drain(second) == [batch(i) for i in range(8)]


def test_a_torn_line_is_skipped_and_the_file_kept_for_inspection(tmp_path: Path) -> None:
    first = BarSpool(tmp_path / "spool", max_rows=0)
    for i in range(3):
        first.push(batch(i))
    (segment,) = (tmp_path / "spool").glob("spool-*.jsonl")
    with segment.open("a") as out:
        out.write('{"bars": [["005930", 17')  # a crash mid-write
    second = BarSpool(tmp_path / "spool", max_rows=0)
    assert drain(second) == [batch(i) for i in range(3)]
    assert segment.with_suffix(".bad").exists()
