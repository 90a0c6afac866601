"""Children of `kisray up` that must not outlive it, even when it is SIGKILLed."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import StartupError

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when its parent dies (Linux only).

    Children run in their own session so a terminal's Ctrl-C reaches only `kisray up`; that also
    means nobody signals them when `kisray up` is killed outright, so ask the kernel to.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start_child(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a child in its own session, logging to `log_path`, that dies with us."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # Own session: a terminal's Ctrl-C reaches only `kisray up`, which stops us in order.
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def wait_listening(
    proc: subprocess.Popen[bytes], host: str, port: int, timeout: float, what: str
) -> bool:
    """Until the child listens on host:port (True) or `timeout` passes (False); StartupError
    if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartupError(f"{what} exited early")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.1)
    return False


def stop_child(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> bool:
    """Signal a running child and wait, killing it after `timeout`; False if it was not running."""
    if proc is None or proc.poll() is not None:
        return False
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    return True
