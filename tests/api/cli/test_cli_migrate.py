"""`kisray migrate` as an operator runs it against a server that is not ready for TimescaleDB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KISRAY = str(Path(sys.executable).with_name("kisray"))


@pytest.mark.timescale
def test_migrate_without_the_preload_picks_postgres_mode_with_one_warning_line(
    timescale_unloaded_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KISRAY_")}
    env.update(
        KISRAY_DATABASE_URL=timescale_unloaded_url,
        KISRAY_DATA_DIR=str(tmp_path / "data"),
        KISRAY_LOG_DIR=str(tmp_path / "logs"),
    )
    done = subprocess.run([KISRAY, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "database mode postgres" in " ".join(output.split())
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, output
    assert "not preloaded" in warnings[0] and "shared_preload_libraries" in warnings[0]
    assert "Traceback" not in output
