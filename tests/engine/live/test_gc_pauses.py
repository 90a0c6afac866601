"""The collector's pauses are measured, and start-up's heap is taken out of its sight."""

from __future__ import annotations

import gc
import time

from engine.live.gc_pauses import YOUNG_THRESHOLD, GcPauses, settle_heap


def test_pauses_are_counted_and_the_worst_recent_one_is_shown() -> None:
    pauses = GcPauses(recent_s=0.2)
    try:
        garbage = [[i] for i in range(50_000)]  # something to walk
        gc.collect(2)
        assert pauses.collections >= 1 and pauses.full >= 1
        worst = pauses.worst_recent()
        assert pauses.total_s > 0 and worst > 0
        assert pauses.worst_recent() == worst  # reading does not reset it
        time.sleep(0.25)
        assert pauses.worst_recent() == 0.0  # older than recent_s
        del garbage
    finally:
        gc.callbacks.remove(pauses._on_gc)


def test_settled_heap_is_frozen_and_young_collections_are_rarer() -> None:
    threshold = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1000  # this process's modules, at least
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
