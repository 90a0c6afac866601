"""Children of `kisray up` that must not outlive it, even when it is SIGKILLed."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when its parent dies (Linux only).

    Children run in their own session so a terminal's Ctrl-C reaches only `kisray up`; that also
    means nobody signals them when `kisray up` is killed outright, so ask the kernel to.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
