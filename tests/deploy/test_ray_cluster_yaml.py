"""ray_cluster.yaml against the cluster-launcher schema shipped inside the installed `ray`."""

from __future__ import annotations

import copy
import ipaddress
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(ray.autoscaler.__file__).with_name("ray-schema.json")
# RFC 5737: the only addresses a committed example may name.
DOCUMENTATION_NETS = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())


def _resources(command: str) -> dict[str, float]:
    """Custom resources a `ray start ... --resources=JSON` shell command advertises."""
    found: dict[str, float] = {}
    for token in shlex.split(command):
        if token.startswith("--resources="):
            found.update(json.loads(token.removeprefix("--resources=")))
    return found


def test_validates_against_rays_own_schema(cluster: dict) -> None:
    jsonschema.validate(cluster, json.loads(SCHEMA.read_text()))
    # The launcher's own path: local-provider preparation, defaults, then validation.
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local"
    assert prepared["max_workers"] == len(cluster["provider"]["worker_ips"])


def test_the_schema_check_is_real(cluster: dict) -> None:
    broken = copy.deepcopy(cluster)
    broken["head_start_commands"] = broken.pop("head_start_ray_commands")  # a misspelt key
    with pytest.raises(jsonschema.ValidationError, match="head_start_commands"):
        jsonschema.validate(broken, json.loads(SCHEMA.read_text()))


def test_addresses_are_documentation_placeholders(cluster: dict) -> None:
    provider = cluster["provider"]
    for address in [provider["head_ip"], *provider["worker_ips"]]:
        ip = ipaddress.ip_address(address)
        assert any(ip in net for net in DOCUMENTATION_NETS), f"{address} is not a placeholder"


def test_only_the_worker_advertises_kis_collector(cluster: dict) -> None:
    workers = [_resources(c) for c in cluster["worker_start_ray_commands"]]
    assert {"kis_collector": 1} in workers
    assert not any("kis_collector" in _resources(c) for c in cluster["head_start_ray_commands"])


def test_head_runs_the_production_driver_and_the_collector_joins_it(cluster: dict) -> None:
    head = " ; ".join(cluster["head_start_ray_commands"])
    assert "ray start --head --port=6379" in head
    # `kisray up` migrates and deploys the Serve app, then starts the collector actors.
    assert "kisray up --profile production --address=auto" in head
    assert "serve deploy" not in head  # it would claim the API port kisray up binds
    workers = " ; ".join(cluster["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in workers
    # Every node loads its settings (and secrets) from the host, never from the synced checkout.
    for command in (
        cluster["head_start_ray_commands"][1:] + cluster["worker_start_ray_commands"][1:]
    ):
        assert ". ~/kisray.env" in command
    assert ".env" in cluster["rsync_exclude"]
