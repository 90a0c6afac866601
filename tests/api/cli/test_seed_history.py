"""`kisray up` seeds demo history in the background; when that fails, for whatever reason, the
log gets one warning line and no traceback, and the stack runs on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import engine.history.backfill
from api.cli.stack import seed_demo_history
from engine.config import load_settings
from engine.errors import UpstreamUnavailableError

# Nothing listens on port 1: the database and the simulator are both unreachable.
DEAD_DB = "postgresql://kisray@127.0.0.1:1/kisray"
DEAD_SIM = "http://127.0.0.1:1"


def seed_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "api.cli.stack" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("failure", "shown"),
    [
        (None, "cannot connect to the database"),  # the real path, against a dead database
        (UpstreamUnavailableError("KIS FHKST03010230 error EGW00121: token"), "EGW00121"),
        (RuntimeError("boom\nsecond line"), "RuntimeError: boom"),
    ],
)
def test_a_failed_seed_logs_one_warning_without_a_traceback(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception | None,
    shown: str,
) -> None:
    if failure is not None:

        async def failing(*_args: object, **_kwargs: object) -> list:
            raise failure

        monkeypatch.setattr(engine.history.backfill, "seed_history", failing)
    settings = load_settings(data_dir=tmp_path, seed_history_days=1, symbols=["005930"])
    with caplog.at_level(logging.INFO, logger="api.cli.stack"):
        seed_demo_history(settings, DEAD_DB, DEAD_SIM)
    (line,) = seed_warnings(caplog)
    assert line.getMessage().startswith("demo history: not seeded")
    assert shown in line.getMessage() and "\n" not in line.getMessage()
    assert line.exc_info is None
