"""The compose files, resolved by a real compose implementation (`docker-compose config`).

No Docker engine is needed: `config` only parses, validates against the compose schema, merges
the override and interpolates. Which services a profile starts is then read from the resolved
`profiles` keys (Compose v1's `config` prints every service; v2's drops inactive ones).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.timescale_server import PG_MAJOR, TESTED_TIMESCALEDB

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
LOCAL = ROOT / "docker-compose.local.yml"


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


COMPOSE = _compose_command()
pytestmark = pytest.mark.skipif(
    COMPOSE is None,
    reason="no compose implementation: install Debian's docker-compose (make test does, as root)",
)

# A clean environment: the resolved files must not depend on the developer's shell.
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}


def resolve(*files: Path, profiles: tuple[str, ...] = (), env: dict | None = None) -> dict:
    cmd = [*COMPOSE, "--project-directory", str(ROOT)]
    for path in files:
        cmd += ["-f", str(path)]
    for profile in profiles:
        cmd += ["--profile", profile]
    done = subprocess.run(
        [*cmd, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**CLEAN_ENV, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def active_services(config: dict, profiles: tuple[str, ...] = ()) -> dict[str, dict]:
    """What `up` starts: services without profiles, plus those in an enabled profile."""
    return {
        name: service
        for name, service in config["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def advertised_resources(service: dict) -> dict[str, float]:
    """Custom Ray resources from a `ray start --resources=JSON` entrypoint or command."""
    argv = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    found: dict[str, float] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--resources="):
            found.update(json.loads(arg.removeprefix("--resources=")))
        elif arg == "--resources":
            found.update(json.loads(argv[i + 1]))
    return found


def published_host_ports(service: dict) -> list[tuple[str, int]]:
    result = []
    for port in service.get("ports", []):
        if isinstance(port, dict):  # Compose v2 long form
            result.append((port.get("host_ip", "0.0.0.0"), int(port["published"])))
        else:  # Compose v1: "HOST_IP:PUBLISHED:TARGET/proto"
            parts = str(port).split("/")[0].split(":")
            host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
            result.append((host_ip, int(parts[-2])))
    return result


def test_local_override_starts_the_core_with_the_simulator_and_no_collector() -> None:
    config = resolve(BASE, LOCAL)
    services = active_services(config)
    assert set(services) == {"db", "ray-head"}
    assert not any("kis_collector" in advertised_resources(s) for s in services.values())
    head = services["ray-head"]
    assert head["command"] == ["--profile", "local"]  # the simulator on, no --no-sim
    assert head["environment"]["KISRAY_KIS_ENV"] == "sim"
    # Development ports stay on loopback and no host port is published twice.
    ports = [p for s in services.values() for p in published_host_ports(s)]
    assert {host for host, _ in ports} == {"127.0.0.1"}
    assert len({port for _, port in ports}) == len(ports)
    assert {8000, 8265, 5432} <= {port for _, port in ports}


def test_production_profile_adds_the_collector_node_with_its_resource() -> None:
    profiles = ("production",)
    config = resolve(BASE, profiles=profiles, env={"KISRAY_PROFILE": "production"})
    services = active_services(config, profiles)
    assert set(services) == {"db", "ray-head", "collector"}
    collectors = [n for n, s in services.items() if advertised_resources(s).get("kis_collector")]
    assert collectors == ["collector"]
    collector = services["collector"]
    assert collector["entrypoint"][:2] == ["ray", "start"]
    assert "--address=ray-head:6379" in collector["entrypoint"]
    assert services["ray-head"]["command"][:2] == ["--profile", "production"]
    # The collector's actors read the KIS credentials in its own processes.
    assert "KISRAY_KIS_APP_KEY" in collector["environment"]


def test_base_file_without_profiles_starts_no_collector() -> None:
    services = active_services(resolve(BASE))
    assert set(services) == {"db", "ray-head"}
    assert services["ray-head"]["command"] == ["--profile", "local", "--no-sim"]


def test_database_is_the_timescaledb_and_postgres_major_the_suite_tests() -> None:
    image = resolve(BASE)["services"]["db"]["image"]
    name, _, tag = image.partition(":")
    assert name == "timescale/timescaledb"
    assert tag == f"{TESTED_TIMESCALEDB}-pg{PG_MAJOR}", tag


def test_credentials_pass_through_and_are_never_written_into_the_files() -> None:
    unset = resolve(BASE)["services"]["ray-head"]["environment"]
    assert unset["KISRAY_KIS_APP_KEY"] is None and unset["KISRAY_KIS_APP_SECRET"] is None
    config = resolve(
        BASE, env={"KISRAY_KIS_APP_KEY": "pk-test-1234", "POSTGRES_PASSWORD": "s3cret"}
    )
    head_env = config["services"]["ray-head"]["environment"]
    assert head_env["KISRAY_KIS_APP_KEY"] == "pk-test-1234"
    assert "s3cret@db:5432" in head_env["KISRAY_DATABASE_URL"]
    for path in (BASE, LOCAL):
        raw = yaml.safe_load(path.read_text())
        envs = [raw.get("x-kis-env") or {}]
        envs += [s.get("environment") or {} for s in raw["services"].values()]
        for env in envs:
            for key in ("KISRAY_KIS_APP_KEY", "KISRAY_KIS_APP_SECRET", "KISRAY_API_TOKEN"):
                assert env.get(key) is None, f"{path.name} sets {key}"


def test_an_invalid_compose_file_is_rejected(tmp_path: Path) -> None:
    # The validator is real: a misspelt key fails, so the passing tests above mean something.
    broken = tmp_path / "broken.yml"
    broken.write_text(BASE.read_text().replace("healthcheck:", "healthchek:", 1))
    cmd = [*COMPOSE, "--project-directory", str(ROOT), "-f", str(broken), "config"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=CLEAN_ENV)
    assert done.returncode != 0
    assert "healthchek" in done.stderr
