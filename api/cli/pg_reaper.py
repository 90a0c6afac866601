"""Stops the embedded PostgreSQL when `kisray up` dies without stopping it (SIGKILL, OOM).

`kisray up` starts this as a child that the kernel signals when its parent dies
(api.cli.child_process.die_with_parent); a clean stop kills it first and stops the database itself.
Without it a killed `kisray up` left its database running until the next start.

Run: python -m api.cli.pg_reaper DATA_DIR
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path


def main(data_dir: Path) -> None:
    died = False

    def parent_died(_signum: int, _frame: object) -> None:
        nonlocal died
        died = True

    signal.signal(signal.SIGTERM, parent_died)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for `kisray up`
    while not died:
        signal.pause()
    from engine.storage.embedded import EmbeddedPostgres

    EmbeddedPostgres(data_dir).stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
