"""The built-in KIS simulator as a child process of `kisray up` (local profile)."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from api.cli.child_process import die_with_parent
from engine.errors import StartupError

logger = logging.getLogger(__name__)


class SimulatorProcess:
    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "api.cli.commands", "sim", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            # Own session: a terminal's Ctrl-C reaches only `kisray up`, which stops us in order.
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StartupError(f"the KIS simulator exited early; see {self.log_path}")
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    logger.info("KIS simulator on port %s (pid %s)", self.port, self._proc.pid)
                    return
            time.sleep(0.1)
        self.stop()
        raise StartupError(f"the KIS simulator did not listen within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        logger.info("KIS simulator stopped")
