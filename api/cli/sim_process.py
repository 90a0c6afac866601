"""The built-in KIS simulator as a child process of `kisray up` (local profile)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

from api.cli.child_process import start_child, stop_child, wait_listening
from engine.errors import StartupError

logger = logging.getLogger(__name__)


class SimulatorProcess:
    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "api.cli.commands", "sim", "--port", str(self.port)]
        self._proc = start_child(cmd, self.log_path)
        what = f"the KIS simulator (see {self.log_path})"
        if wait_listening(self._proc, "127.0.0.1", self.port, timeout, what):
            logger.info("KIS simulator on port %s (pid %s)", self.port, self._proc.pid)
            return
        self.stop()
        raise StartupError(f"the KIS simulator did not listen within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if stop_child(proc, signal.SIGINT, timeout):
            logger.info("KIS simulator stopped")
