"""The manifests of k8s/ against their schemas, offline: core kinds with kubernetes-validate
--strict, RayService / RayJob / RayCluster with the KubeRay v1.7.0 CRD schemas (jsonschema)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
K8S_DIR = REPO_ROOT / "k8s"
KUBERAY_SCHEMAS = REPO_ROOT / "tests" / "data" / "kuberay-v1.7.0"
#: The CI clone has the shared folder beside the repository; a plain clone does not.
SHARED_CRDS = REPO_ROOT.parent / "shared" / "kuberay-crds-v1.7.0"
KUBERAY_KINDS = {"RayService", "RayJob", "RayCluster"}


def _kubernetes_validate() -> Any:
    return pytest.importorskip(
        "kubernetes_validate.utils", reason="kubernetes-validate is not installed"
    )


def _strict(schema: Any) -> Any:
    """The schema with unknown fields rejected, as the API server's strict field validation does.

    CRD schemas leave ``additionalProperties`` out (the API server prunes or, with
    ``kubectl apply``'s default strict validation, refuses unknown fields); a JSON-schema
    validator would accept them. Objects that preserve unknown fields are left open.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: (_strict(value) if key != "properties" else {k: _strict(v) for k, v in value.items()})
        for key, value in schema.items()
    }
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _crd_errors(body: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    validator = jsonschema.Draft7Validator(_strict(schema))
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.path)))
    ]


def test_core_kinds_pass_kubernetes_validate_strict(manifests: list[Any]) -> None:
    utils = _kubernetes_validate()
    version = utils.latest_version()
    core = [m for m in manifests if m.kind not in KUBERAY_KINDS]
    assert {m.kind for m in core} >= {
        "Namespace",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "NetworkPolicy",
    }
    failures = []
    for manifest in core:
        try:
            utils.validate(manifest.body, version, strict=True)
        except utils.ValidationError as error:
            failures.append(f"{manifest}: {'.'.join(map(str, error.path))}: {error.message}")
    assert failures == [], f"against Kubernetes {version}"


def test_ray_pod_templates_pass_kubernetes_validate_strict(templates: list[Any]) -> None:
    # The CRDs embed the core PodSpec; check each Ray pod template as a core PodTemplate too.
    utils = _kubernetes_validate()
    version = utils.latest_version()
    failures = []
    ray_templates = [t for t in templates if t.manifest.kind in KUBERAY_KINDS]
    # Head and GPU workers of the RayService and of the RayJob (HTTPMode: no submitter pod).
    assert len(ray_templates) >= 4, [str(t) for t in ray_templates]
    for template in ray_templates:
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "check"},
            "template": {"spec": template.spec},
        }
        try:
            utils.validate(wrapped, version, strict=True)
        except utils.ValidationError as error:
            failures.append(f"{template}: {'.'.join(map(str, error.path))}: {error.message}")
    assert failures == [], f"against Kubernetes {version}"


def test_kubernetes_validate_strict_catches_a_typo(manifests: list[Any]) -> None:
    utils = _kubernetes_validate()
    deployment = copy.deepcopy(next(m for m in manifests if m.kind == "Deployment").body)
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(utils.ValidationError):
        utils.validate(deployment, utils.latest_version(), strict=True)


@pytest.mark.parametrize("kind", ["RayService", "RayJob"])
def test_kuberay_resources_match_the_v1_7_0_crd_schemas(
    manifests: list[Any], kuberay_schemas: dict[str, Any], kind: str
) -> None:
    found = [m for m in manifests if m.kind == kind]
    assert found, f"no {kind} in {K8S_DIR}"
    for manifest in found:
        assert manifest.body["apiVersion"] == "ray.io/v1", manifest
        assert _crd_errors(manifest.body, kuberay_schemas[kind]) == [], str(manifest)


def test_embedded_ray_cluster_specs_match_the_raycluster_schema(
    rayservice: Any, rayjob: Any, kuberay_schemas: dict[str, Any]
) -> None:
    for manifest, spec in (
        (rayservice, rayservice.body["spec"]["rayClusterConfig"]),
        (rayjob, rayjob.body["spec"]["rayClusterSpec"]),
    ):
        cluster = {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": manifest.name},
            "spec": spec,
        }
        assert _crd_errors(cluster, kuberay_schemas["RayCluster"]) == [], str(manifest)


def test_crd_check_catches_typos_and_wrong_types(
    rayservice: Any, kuberay_schemas: dict[str, Any]
) -> None:
    body = copy.deepcopy(rayservice.body)
    body["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    body["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplicas"] = "one"
    errors = _crd_errors(body, kuberay_schemas["RayService"])
    assert any("rayStartParam" in error for error in errors), errors
    assert any("minReplicas" in error for error in errors), errors


def test_worker_group_replica_bounds(rayservice: Any, rayjob: Any) -> None:
    # The KubeRay webhook's rule, which the CRD schema does not express.
    for manifest, spec in (
        (rayservice, rayservice.body["spec"]["rayClusterConfig"]),
        (rayjob, rayjob.body["spec"]["rayClusterSpec"]),
    ):
        groups = spec["workerGroupSpecs"]
        assert len({g["groupName"] for g in groups}) == len(groups), (
            f"{manifest}: duplicate groupName"
        )
        for group in groups:
            assert (
                0
                <= group["minReplicas"]
                <= group.get("replicas", group["minReplicas"])
                <= group["maxReplicas"]
            ), f"{manifest}: {group['groupName']}"


def test_stored_schemas_are_the_v1_schemas_of_the_kuberay_crds() -> None:
    if not SHARED_CRDS.is_dir():
        pytest.skip(f"no KubeRay CRDs at {SHARED_CRDS} to compare with (plain clone)")
    for kind in ("raycluster", "rayjob", "rayservice"):
        # The C loader when PyYAML has it: the three CRDs are 3 MB of YAML.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        crd = yaml.load((SHARED_CRDS / f"ray.io_{kind}s.yaml").read_text(), Loader=loader)
        (v1,) = [
            v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1"
        ]
        stored = json.loads((KUBERAY_SCHEMAS / f"{kind}.schema.json").read_text())
        assert stored == v1, (
            f"tests/data/kuberay-v1.7.0/{kind}.schema.json is not the v1 schema of the CRD"
        )


def test_every_object_is_in_the_serlens_namespace(manifests: list[Any]) -> None:
    for manifest in manifests:
        if manifest.kind == "Namespace":
            assert manifest.name == "serlens"
        else:
            assert manifest.body["metadata"].get("namespace") == "serlens", str(manifest)


@pytest.mark.parametrize("folder", ["", "study", "loader"])
def test_each_kustomization_lists_its_files_once_and_takes_the_shared_images(folder: str) -> None:
    root = K8S_DIR / folder
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "serlens"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), resources
    assert set(resources) == {p.name for p in root.glob("*.yaml")} - {"kustomization.yaml"}
    assert kustomization["components"][0] == ("image" if not folder else "../image")
    if not folder:
        assert resources[0] == "namespace.yaml", "the namespace goes first"


def test_network_policies_deny_by_default_then_allow_ray_serve_and_mlflow(
    manifests: list[Any],
) -> None:
    policies = {m.name: m.body["spec"] for m in manifests if m.kind == "NetworkPolicy"}
    deny = [
        spec for spec in policies.values() if spec["podSelector"] == {} and "ingress" not in spec
    ]
    assert deny and deny[0]["policyTypes"] == ["Ingress"], (
        "a default-deny ingress policy is missing"
    )
    opened = {
        port["port"]
        for spec in policies.values()
        for rule in spec.get("ingress", [])
        for port in rule.get("ports", [])
    }
    assert {8000, 8265, 5000} <= opened, opened
    # Ray pods take every port from Ray pods but the API's (8000) and, on the head, the job API's.
    closed = {"allow-ray-workers-from-ray": {8000}, "allow-ray-head-from-ray-but-the-job-api": {8000, 8265}}
    for name, shut in closed.items():
        (rule,) = policies[name]["ingress"]
        ranges = [range(p["port"], p.get("endPort", p["port"]) + 1) for p in rule["ports"]]
        assert set(range(1, 65536)) - {port for r in ranges for port in r} == shut, name
