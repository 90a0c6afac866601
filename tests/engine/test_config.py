from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import KIS_DEFAULT_URLS, load_settings
from engine.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("KISRAY_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_run_against_the_simulator() -> None:
    settings = load_settings()
    assert settings.kis_env == "sim"
    assert settings.database_url is None
    assert settings.max_registrations == 41
    assert settings.port == 8000
    assert settings.ws_url == KIS_DEFAULT_URLS["sim"][0]
    assert settings.data_dir.is_absolute()


def test_environment_overrides_and_url_defaults_per_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KISRAY_KIS_ENV", "real")
    monkeypatch.setenv("KISRAY_CORS_ORIGINS", "http://a.example, http://b.example")
    settings = load_settings()
    assert settings.ws_url == "ws://ops.koreainvestment.com:21000"
    assert settings.rest_url == "https://openapi.koreainvestment.com:9443"
    assert settings.cors_origins == ["http://a.example", "http://b.example"]


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KISRAY_PORT=9123\nKISRAY_SYMBOLS=005930,000660\n")
    settings = load_settings()
    assert settings.port == 9123
    assert settings.symbols == ["005930", "000660"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KISRAY_PORT", "eighty"),
        ("KISRAY_MAX_REGISTRATIONS", "99"),
        ("KISRAY_KIS_ENV", "prod"),
        ("KISRAY_KIS_WS_URL", "http://wrong"),
        ("KISRAY_SYMBOLS", "5930"),
    ],
)
def test_invalid_value_names_the_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{key}:")
    assert "\n" not in message


def test_secrets_lists_keys_tokens_and_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KISRAY_KIS_APP_KEY", "PSappkey123456")
    monkeypatch.setenv("KISRAY_KIS_APP_SECRET", "verysecretvalue")
    monkeypatch.setenv("KISRAY_API_TOKEN", "tok-abcdef")
    monkeypatch.setenv("KISRAY_DATABASE_URL", "postgresql://u:dbpass99@db:5432/x")
    settings = load_settings()
    assert set(settings.secrets()) == {
        "PSappkey123456",
        "verysecretvalue",
        "tok-abcdef",
        "dbpass99",
    }
    assert "verysecretvalue" not in repr(settings)


def test_cli_stops_with_one_line_on_invalid_config(tmp_path: Path) -> None:
    kisray = Path(sys.executable).with_name("kisray")
    result = subprocess.run(
        [str(kisray), "migrate"],
        env={"PATH": "/usr/bin:/bin", "KISRAY_MAX_REGISTRATIONS": "42"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert "KISRAY_MAX_REGISTRATIONS" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
