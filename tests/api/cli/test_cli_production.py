"""`kisray up --profile production` refuses to start without KIS credentials: one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from actors.names import COLLECTOR_ACTOR_OPTIONS
from api.cli.collector import require_kis_credentials
from engine.config import load_settings
from engine.errors import ConfigError

KISRAY = str(Path(sys.executable).with_name("kisray"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kis_env": "sim"}, "KISRAY_KIS_ENV: the production profile needs paper or real"),
        ({"kis_env": "paper"}, "KISRAY_KIS_APP_KEY and KISRAY_KIS_APP_SECRET: required"),
        ({"kis_env": "real", "kis_app_key": "PSabcdef"}, "KISRAY_KIS_APP_SECRET: required"),
        ({"kis_env": "real", "kis_app_key": " ", "kis_app_secret": "zz9"}, "KISRAY_KIS_APP_KEY:"),
    ],
)
def test_missing_credentials_are_refused(overrides: dict, message: str, tmp_path: Path) -> None:
    base = {"data_dir": tmp_path, "kis_app_key": None, "kis_app_secret": None}
    settings = load_settings(**{**base, **overrides})
    with pytest.raises(ConfigError, match=message) as caught:
        require_kis_credentials(settings)
    assert "\n" not in caught.value.message
    assert "PSabcdef" not in caught.value.message and "zz9" not in caught.value.message


@pytest.mark.parametrize("kis_env", ["paper", "real"])
def test_paper_or_real_with_both_credentials_is_accepted(kis_env: str, tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        kis_env=kis_env,
        kis_app_key=SecretStr("PSkey-1234"),
        kis_app_secret=SecretStr("secret-5678"),
    )
    require_kis_credentials(settings)  # no error


def test_collector_actors_request_the_collector_resource() -> None:
    demand = COLLECTOR_ACTOR_OPTIONS["resources"]["kis_collector"]
    assert 0 < demand <= 0.5  # both collector actors fit on the node's one unit


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KISRAY_", "RAY_"))}
    env.update(KISRAY_DATA_DIR=str(tmp_path / "data"), KISRAY_LOG_DIR=str(tmp_path / "logs"))
    env.update(extra)
    return env


def test_up_production_without_credentials_exits_with_one_line(tmp_path: Path) -> None:
    env = _cli_env(tmp_path, KISRAY_KIS_ENV="real", KISRAY_KIS_APP_KEY="PSvisible-key")
    done = subprocess.run(
        [KISRAY, "up", "--profile", "production"],
        cwd=tmp_path,  # no stray .env
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: KISRAY_KIS_APP_SECRET: required by the production profile (KIS real credentials)"
    ]
    assert "PSvisible-key" not in done.stdout + done.stderr
    # Refused before anything started: the data directory (lock, database) was never created.
    assert not (tmp_path / "data").exists()


def test_up_production_refuses_the_simulator_environment(tmp_path: Path) -> None:
    done = subprocess.run(
        [KISRAY, "up", "--profile", "production"],
        cwd=tmp_path,
        env=_cli_env(tmp_path, KISRAY_KIS_ENV="sim"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "KISRAY_KIS_ENV: the production profile needs paper or real, not sim" in done.stderr


@pytest.mark.slow
def test_up_production_serves_the_api_without_the_simulator(
    tmp_path: Path, migrated_url: str
) -> None:
    import signal
    import time

    import httpx

    from tests.conftest import free_port

    port, sim_port, closed_port = free_port(), free_port(), free_port()
    # Never dial the real KIS servers from a test: a loopback port with nothing listening is
    # the "KIS is unreachable" case: the API serves, /health says why it is not ready.
    env = _cli_env(
        tmp_path,
        KISRAY_DATABASE_URL=migrated_url,
        KISRAY_PORT=str(port),
        KISRAY_SIM_PORT=str(sim_port),
        KISRAY_KIS_ENV="paper",
        KISRAY_KIS_APP_KEY="PSfake-app-key-0001",
        KISRAY_KIS_APP_SECRET="fake-app-secret-0002",
        KISRAY_KIS_WS_URL=f"ws://127.0.0.1:{closed_port}",
        KISRAY_KIS_REST_URL=f"http://127.0.0.1:{closed_port}",
    )
    out = tmp_path / "up.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [KISRAY, "up", "--profile", "production"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "kisray is up" not in out.read_text():  # start-up does not wait for KIS long
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.5)
        assert "KIS does not accept us yet" in out.read_text()
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health/live", timeout=5).json() == {"status": "alive"}
        reply = httpx.get(f"{base}/health", timeout=5)
        health = reply.json()
        assert reply.status_code == 503 and health["database"]["reachable"] is True, health
        assert health["kis"]["env"] == "paper"
        assert health["kis"]["rest_url"] == f"http://127.0.0.1:{closed_port}"
        # The collector runs (this head advertises kis_collector) but cannot reach KIS: not
        # ready, and /health says why; stored data is still served.
        assert health["kis"]["state"] not in ("not_started", "connected", "unreachable")
        assert any("kis socket" in p and "failed" in p for p in health["problems"]), health
        assert httpx.get(f"{base}/symbols", timeout=10).status_code == 200
        with pytest.raises(httpx.HTTPError):  # production never starts the simulator
            httpx.get(f"http://127.0.0.1:{sim_port}/_sim/stats", timeout=2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    printed = out.read_text()
    assert "profile production" in printed
    assert "collector  KIS paper" in printed
    logged = printed + "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "fake-app-secret-0002" not in logged and "PSfake-app-key-0001" not in logged
