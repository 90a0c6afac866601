"""deploy/serve_config.yaml against Serve's own schema and against the code it deploys."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from actors.names import SERVE_APP
from api.app import HEALTH_CHECK_PERIOD_S, MAX_ONGOING_REQUESTS

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "serve_config.yaml"
SERVE = str(Path(sys.executable).with_name("serve"))


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_validates_with_serves_schema(raw: dict) -> None:
    config = ServeDeploySchema.model_validate(raw)
    [application] = config.applications
    assert application.name == SERVE_APP
    assert application.route_prefix == "/"
    [ingress] = application.deployments
    assert ingress.name == "KisrayIngress"
    assert ingress.max_ongoing_requests == MAX_ONGOING_REQUESTS  # not Serve's default of 5
    assert ingress.health_check_period_s == HEALTH_CHECK_PERIOD_S  # not Serve's 10 s
    assert ingress.num_replicas == 1


def test_the_schema_check_is_real(raw: dict) -> None:
    broken = copy.deepcopy(raw)
    broken["applications"][0]["deployments"][0]["max_ongoing_requests"] = 0
    with pytest.raises(pydantic.ValidationError, match="max_ongoing_requests"):
        ServeDeploySchema.model_validate(broken)
    broken = copy.deepcopy(raw)
    broken["applications"].append(copy.deepcopy(broken["applications"][0]))  # a duplicate name
    with pytest.raises(pydantic.ValidationError, match="kisray"):
        ServeDeploySchema.model_validate(broken)


def test_import_path_names_a_serve_application(raw: dict) -> None:
    from importlib import import_module

    from ray.serve import Application

    module, _, attr = raw["applications"][0]["import_path"].partition(":")
    assert isinstance(getattr(import_module(module), attr), Application)


def test_matches_what_serve_build_generates_today(raw: dict, tmp_path: Path) -> None:
    """The committed file is not stale: deployment options still match api/app.py."""
    out = tmp_path / "built.yaml"
    import_path = raw["applications"][0]["import_path"]
    done = subprocess.run(
        [SERVE, "build", import_path, "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    built = yaml.safe_load(out.read_text())
    ours = raw["applications"][0]["deployments"]
    fresh = built["applications"][0]["deployments"]
    # num_replicas is ours to choose (documented in the file); everything else comes from code.
    assert [{k: v for k, v in d.items() if k != "num_replicas"} for d in ours] == fresh
    assert built["applications"][0]["import_path"] == import_path
