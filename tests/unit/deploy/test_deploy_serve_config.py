"""deploy/serve_config.yaml: a valid Ray Serve config, strict about keys, and the very text of
the RayService's serveConfigV2."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve import schema

from serlens.api.config import ApiArgs

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVE_CONFIG = REPO_ROOT / "deploy" / "serve_config.yaml"
DEPLOYMENT_NAMES = {"Ingress", "Normalize", "Egemaps", "Embed", "Predict"}
APP_ARGS = set(ApiArgs.model_fields)



@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def _unknown_keys(config: dict[str, Any]) -> list[str]:
    """Keys the Serve schemas do not define (ServeDeploySchema itself ignores them silently)."""
    from ray.serve.config import AutoscalingConfig

    def check(where: str, mapping: dict[str, Any], model: Any) -> list[str]:
        return [f"{where}.{key}" for key in mapping if key not in model.__fields__]

    unknown = check("", config, schema.ServeDeploySchema)
    unknown += check("http_options", config.get("http_options", {}), schema.HTTPOptionsSchema)
    for i, app in enumerate(config.get("applications", [])):
        unknown += check(f"applications[{i}]", app, schema.ServeApplicationSchema)
        for deployment in app.get("deployments", []):
            where = f"applications[{i}].deployments[{deployment.get('name')}]"
            unknown += check(where, deployment, schema.DeploymentSchema)
            unknown += check(
                f"{where}.autoscaling_config",
                deployment.get("autoscaling_config", {}),
                AutoscalingConfig,
            )
    return unknown


def _all_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(_all_keys(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_all_keys(item) for item in node))
    return set()


def test_parses_as_a_serve_deploy_schema(config: dict[str, Any]) -> None:
    parsed = schema.ServeDeploySchema.parse_obj(config)
    assert [app.name for app in parsed.applications] == ["serlens"]


def test_has_no_key_the_serve_schemas_do_not_know(config: dict[str, Any]) -> None:
    assert _unknown_keys(config) == []


def test_unknown_key_check_catches_a_typo(config: dict[str, Any]) -> None:
    broken = copy.deepcopy(config)
    broken["applications"][0]["deployments"][0]["max_ongoing_request"] = 5
    assert _unknown_keys(broken) == ["applications[0].deployments[Ingress].max_ongoing_request"]


def test_application_builds_the_api(config: dict[str, Any]) -> None:
    (app,) = config["applications"]
    assert app["import_path"] == "serlens.api.app:build_app"
    assert app["route_prefix"] == "/"
    assert set(app["args"]) <= APP_ARGS, f"unknown build_app args: {set(app['args']) - APP_ARGS}"
    assert app["args"]["workdir"] is None, "workdir must stay null (SERLENS_WORKDIR on the cluster)"
    assert {d["name"] for d in app["deployments"]} == DEPLOYMENT_NAMES


def test_listens_on_all_interfaces_port_8000(config: dict[str, Any]) -> None:
    assert config["http_options"]["host"] == "0.0.0.0"
    assert config["http_options"]["port"] == 8000


def test_gpu_share_and_cpu_placement_are_explicit(config: dict[str, Any]) -> None:
    # Not decided when the app is built (a cold GPU node would make Embed and Predict serve on
    # CPU): two replicas share one GPU, the CPU services ask for the CPU group's resource.
    (app,) = config["applications"]
    api = ApiArgs.model_validate(app["args"]).to_config()
    assert app["args"]["model_gpus"] == 0.5
    for name in ("Ingress", "Normalize", "Egemaps"):
        assert api.deployment_options[name]["ray_actor_options"]["resources"] == {"serlens_cpu": 1}, name
    for name in ("Embed", "Predict"):
        assert "resources" not in api.deployment_options[name]["ray_actor_options"], name
    # A ray_actor_options entry under `deployments` would replace build_app's options.
    for deployment in app["deployments"]:
        assert "ray_actor_options" not in deployment, deployment["name"]


def test_the_cluster_offers_what_the_config_asks_for(config: dict[str, Any], rayservice: Any) -> None:
    import json

    (app,) = config["applications"]
    api = ApiArgs.model_validate(app["args"]).to_config()
    cluster = rayservice.body["spec"]["rayClusterConfig"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    offered = json.loads(json.loads(groups["cpu"]["rayStartParams"]["resources"]))
    asked = {key for options in api.deployment_options.values()
             for key in options.get("ray_actor_options", {}).get("resources", {})}
    assert asked | set(api.train_driver_resources) <= set(offered)
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert 2 * app["args"]["model_gpus"] <= gpu  # one Embed and one Predict replica per GPU worker


def test_every_deployment_sets_its_serving_limits(config: dict[str, Any]) -> None:
    for deployment in config["applications"][0]["deployments"]:
        name = deployment["name"]
        assert deployment.get("max_ongoing_requests", 0) >= 1, name
        assert ("num_replicas" in deployment) != ("autoscaling_config" in deployment), (
            f"{name}: give num_replicas or autoscaling_config, one of them"
        )
        scaling = deployment.get("autoscaling_config")
        if scaling:
            assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"], name
        for key in (
            "health_check_period_s",
            "health_check_timeout_s",
            "graceful_shutdown_timeout_s",
        ):
            assert key in deployment, f"{name}: {key} missing"


def test_embed_can_hold_a_full_batch(config: dict[str, Any]) -> None:
    (app,) = config["applications"]
    embed = next(d for d in app["deployments"] if d["name"] == "Embed")
    assert embed["max_ongoing_requests"] >= app["args"]["embed_max_batch_size"]


def test_is_the_text_of_the_rayservice_serve_config(
    rayservice: Any, config: dict[str, Any]
) -> None:
    embedded = rayservice.body["spec"]["serveConfigV2"]
    assert yaml.safe_load(embedded) == config, (
        "k8s/rayservice.yaml serveConfigV2 differs from deploy/serve_config.yaml"
    )
    assert embedded.strip() == SERVE_CONFIG.read_text().strip(), (
        "same meaning, other text: paste deploy/serve_config.yaml into serveConfigV2 verbatim"
    )


def test_api_args_model_accepts_the_args(config: dict[str, Any]) -> None:
    ApiArgs.model_validate(config["applications"][0]["args"])
