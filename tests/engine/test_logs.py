from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.logs import REDACTED, configure_logging, register_secret


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "logs" / "kisray.log"
    configure_logging(path, "DEBUG", secrets=["app-secret-0001"], rotate=True, console=False)
    yield path
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def _flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def test_secrets_are_redacted_in_messages_arguments_and_tracebacks(log_file: Path) -> None:
    log = logging.getLogger("kisray.test")
    log.info("key is app-secret-0001")
    log.warning("args %s", "app-secret-0001")
    try:
        raise RuntimeError("failed with app-secret-0001")
    except RuntimeError:
        log.exception("boom")
    _flush()
    text = log_file.read_text()
    assert "app-secret-0001" not in text
    for redacted_line in (
        f"key is {REDACTED}",
        f"args {REDACTED}",
        f"RuntimeError: failed with {REDACTED}",
    ):
        assert redacted_line in text
    assert "Traceback (most recent call last)" in text


def test_secrets_registered_at_runtime_are_redacted(log_file: Path) -> None:
    register_secret("approval-key-xyz")
    logging.getLogger("kisray.test").info("approval approval-key-xyz issued")
    _flush()
    assert "approval-key-xyz" not in log_file.read_text()


def test_configuring_twice_does_not_duplicate_lines(log_file: Path) -> None:
    configure_logging(log_file, "INFO", rotate=True, console=False)
    logging.getLogger("kisray.test").info("once")
    _flush()
    assert log_file.read_text().count("once") == 1
