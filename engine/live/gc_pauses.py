"""How long the garbage collector stops this process: a hub's frames wait for it like any task.

Installed once per process (the replica's hub); its stats show the worst recent pause.
"""

from __future__ import annotations

import functools
import gc
import time
from collections import deque

RECENT_S = 10.0  # how far back `worst_recent` looks


class GcPauses:
    def __init__(self, recent_s: float = RECENT_S) -> None:
        self.collections = 0
        self.full = 0  # collections of the oldest generation: the long ones
        self.total_s = 0.0
        self.recent_s = recent_s
        self._recent: deque[tuple[float, float]] = deque(maxlen=1024)  # (ended at, pause)
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        ended = time.perf_counter()
        pause = ended - self._started
        self.collections += 1
        self.full += info.get("generation") == 2
        self.total_s += pause
        self._recent.append((ended, pause))

    def worst_recent(self) -> float:
        """The longest pause of the last `recent_s` seconds. Reading changes nothing: /health
        and /ws/stats both show it."""
        since = time.perf_counter() - self.recent_s
        return max((pause for ended, pause in self._recent if ended >= since), default=0.0)


# Container allocations between young collections (CPython's default is 700). Most of a
# window's objects (records, rendered messages) die within it: collected less often, fewer of
# them are still alive to be walked and promoted.
YOUNG_THRESHOLD = 20_000


@functools.cache
def gc_pauses() -> GcPauses:
    """This process's GcPauses, measuring from the first call."""
    return GcPauses()


def settle_heap() -> None:
    """Move everything start-up built (imports, Ray's and Serve's state) out of the collector's
    sight: it is never garbage, yet each full collection walked all of it. Measured in the
    replica at 1,000 tabs: pauses up to 0.56 s and 10 % of a core (docs/fanout.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
