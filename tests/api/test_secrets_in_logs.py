"""No configured secret in any log file or response of the isolated app's run (token, fake KIS
key and secret configured), after requests that succeed, fail and are refused."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from engine.logs import configure_logging
from tests.api.isolated_stack import SYMBOL, IsolatedStack

pytestmark = pytest.mark.slow


def _every_log_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_no_secret_in_logs_or_responses(iso: IsolatedStack) -> None:
    replies = []
    with httpx.Client(base_url=iso.base_url, timeout=30) as client:
        replies.append(client.get("/health"))
        replies.append(client.get("/symbols"))  # refused: no token
        replies.append(client.get("/symbols", headers={"Authorization": "Bearer wrong"}))
        authed = iso.auth()
        replies.append(client.get("/symbols", headers=authed))
        replies.append(client.get(f"/candles/{SYMBOL}", headers=authed, params={"interval": "1h"}))
        replies.append(client.get("/candles/999999", headers=authed))  # 404
        replies.append(client.get("/candles/bad!", headers=authed))  # 400
        replies.append(client.get("/metrics", headers=authed))
        replies.append(client.get("/openapi.json"))
    assert [r.status_code for r in replies][:4] == [200, 401, 401, 200]

    for reply in replies:
        for secret in iso.secrets:
            assert secret not in reply.text, f"a secret in the response of {reply.url}"
            assert all(secret not in v for v in reply.headers.values())

    files = _every_log_file(iso.log_dir)
    assert files, "the isolated app wrote no log"
    text = "\n".join(p.read_text(errors="replace") for p in files)
    assert "401" in text and "404" in text  # the refused and failed requests were logged
    for secret in iso.secrets:
        assert secret not in text, "a configured secret reached a log file"


def test_redaction_catches_a_secret_logged_by_mistake(tmp_path: Path) -> None:
    """The same grep finds a secret when redaction is bypassed, so the test above can fail."""
    secret = "not-redacted-1234567890"
    path = tmp_path / "kisray.log"
    configure_logging(path, "INFO", secrets=[secret], console=False)
    logging.getLogger("tests.secrets").warning("key is %s", secret)
    with path.open("a") as raw:  # a line written around the formatter
        raw.write(f"raw {secret}\n")
    lines = path.read_text().splitlines()
    assert "[REDACTED]" in lines[0] and secret not in lines[0]
    assert secret in lines[1]
