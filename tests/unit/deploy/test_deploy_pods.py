"""Every container the manifests start: non-root securityContext, requests and limits, probes
(where the container serves), and the Ray pods' volumes, env, and GPU placement."""

from __future__ import annotations

from typing import Any

import pytest

SERLENS_ENV = {
    "SERLENS_WORKDIR": "/data/serlens",
    "MLFLOW_TRACKING_URI": "http://mlflow.serlens.svc:5000",
}


def _containers(templates: list[Any]) -> list[tuple[str, dict[str, Any], Any]]:
    return [
        (f"{t}.{c['name']}", c, t)
        for t in templates
        for c in t.spec.get("initContainers", []) + t.spec["containers"]
    ]


def _check_container_security(where: str, context: dict[str, Any] | None) -> list[str]:
    if not context:
        return [f"{where}: no securityContext"]
    problems = []
    if context.get("runAsNonRoot") is not True:
        problems.append(f"{where}: runAsNonRoot is not true")
    if context.get("runAsUser") != 1000:
        problems.append(f"{where}: runAsUser is not 1000 (the image's ray user)")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if context.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{where}: capabilities do not drop ALL")
    if context.get("capabilities", {}).get("add"):
        problems.append(f"{where}: adds capabilities")
    if context.get("privileged"):
        problems.append(f"{where}: privileged")
    if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    return problems


def _check_resources(where: str, resources: dict[str, Any] | None) -> list[str]:
    problems = []
    for section in ("requests", "limits"):
        missing = {"cpu", "memory"} - set((resources or {}).get(section, {}))
        if missing:
            problems.append(f"{where}: resources.{section} lacks {sorted(missing)}")
    return problems


def test_every_container_runs_non_root_without_privileges(templates: list[Any]) -> None:
    problems = []
    for where, container, template in _containers(templates):
        problems += _check_container_security(where, container.get("securityContext"))
        pod = template.spec.get("securityContext", {})
        if (
            pod.get("runAsNonRoot") is not True
            or pod.get("seccompProfile", {}).get("type") != "RuntimeDefault"
        ):
            problems.append(f"{template}: pod securityContext lacks runAsNonRoot or seccomp")
    assert problems == []


def test_every_container_has_requests_and_limits(templates: list[Any]) -> None:
    problems = []
    for where, container, _ in _containers(templates):
        problems += _check_resources(where, container.get("resources"))
    assert problems == []


def test_the_security_check_catches_a_root_container() -> None:
    problems = _check_container_security(
        "x", {"runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}}
    )
    assert len(problems) == 6, problems
    assert _check_resources("x", {"requests": {"cpu": "1"}}) != []


def test_serving_containers_have_readiness_and_liveness_probes(templates: list[Any]) -> None:
    # Batch pods (the RayJob's submitter, the data loader) run to completion: a liveness probe
    # there only adds a way to kill a healthy job.
    serving = [(where, c) for where, c, t in _containers(templates) if not t.batch]
    assert len(serving) >= 5, [where for where, _ in serving]
    missing = [
        f"{where}: {probe}"
        for where, container in serving
        for probe in ("readinessProbe", "livenessProbe")
        if probe not in container
    ]
    assert missing == []


def test_autoscaler_sidecar_is_hardened_and_sized(rayservice: Any) -> None:
    # KubeRay builds this container itself; autoscalerOptions is the only way to shape it.
    cluster = rayservice.body["spec"]["rayClusterConfig"]
    assert cluster.get("enableInTreeAutoscaling") is True
    options = cluster["autoscalerOptions"]
    assert _check_container_security("autoscaler", options.get("securityContext")) == []
    assert _check_resources("autoscaler", options.get("resources")) == []


@pytest.fixture(scope="module")
def ray_containers(templates: list[Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = [
        (str(t), t.spec["containers"][0], t.spec)
        for t in templates
        if t.manifest.kind in {"RayService", "RayJob"} and "submitterPodTemplate" not in t.where
    ]
    assert len(found) == 6, [where for where, _, _ in found]  # head, CPU and GPU workers, twice
    return found


def test_ray_pods_mount_the_store_and_the_weights_read_only(ray_containers: list[Any]) -> None:
    for where, container, pod in ray_containers:
        claims = {
            v["name"]: v["persistentVolumeClaim"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        store, models = mounts["/data/serlens"], mounts["/models"]
        assert claims[store["name"]]["claimName"] == "serlens-store", where
        assert not store.get("readOnly"), where
        assert claims[models["name"]]["claimName"] == "serlens-models", where
        assert models.get("readOnly") is True and claims[models["name"]].get("readOnly") is True, (
            where
        )


def test_ray_pods_get_the_workdir_and_the_tracking_server(ray_containers: list[Any]) -> None:
    for where, container, _ in ray_containers:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert {k: env.get(k) for k in SERLENS_ENV} == SERLENS_ENV, where
        # deploy/ is read relative to the working directory (the image's WORKDIR).
        assert container.get("workingDir") == "/home/ray/serlens", where


#: Labels the clouds put on GPU nodes (preferred by GPU pods, avoided by the others).
GPU_NODE_LABELS = {
    "cloud.google.com/gke-accelerator",  # GKE
    "kubernetes.azure.com/accelerator",  # AKS
    "karpenter.k8s.aws/instance-gpu-count",  # EKS with Karpenter
    "eks.amazonaws.com/instance-gpu-count",  # EKS Auto Mode
    "nvidia.com/gpu.present",  # NVIDIA GPU operator (GPU feature discovery)
}


def _clusters(rayservice: Any, rayjob: Any) -> list[tuple[Any, dict[str, Any]]]:
    return [(rayservice, rayservice.body["spec"]["rayClusterConfig"]),
            (rayjob, rayjob.body["spec"]["rayClusterSpec"])]


def _start_resources(group: dict[str, Any]) -> dict[str, float]:
    import json

    raw = group.get("rayStartParams", {}).get("resources")
    return json.loads(json.loads(raw)) if raw else {}


def test_gpu_workers_ask_for_one_gpu_and_fit_any_stock_gpu_pool(rayservice: Any, rayjob: Any) -> None:
    for manifest, cluster in _clusters(rayservice, rayjob):
        groups = {g["groupName"]: g["template"]["spec"] for g in cluster["workerGroupSpecs"]}
        assert set(groups) == {"cpu", "gpu"}, manifest
        pod = groups["gpu"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1, manifest
        # No label is required (stock pools lack GPU feature discovery's): the GPU request places it.
        assert "nodeSelector" not in pod, manifest
        affinity = pod["affinity"]["nodeAffinity"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in affinity, manifest
        preferred = {e["key"] for term in affinity["preferredDuringSchedulingIgnoredDuringExecution"]
                     for e in term["preference"]["matchExpressions"]}
        assert preferred == GPU_NODE_LABELS, manifest
        tolerated = {(t["key"], t.get("value")) for t in pod["tolerations"]}
        assert tolerated == {("nvidia.com/gpu", None), ("sku", "gpu")}, manifest


def test_cpu_pods_stay_off_gpu_nodes(rayservice: Any, rayjob: Any) -> None:
    for manifest, cluster in _clusters(rayservice, rayjob):
        cpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "cpu")["template"]["spec"]
        for where, pod in (("head", cluster["headGroupSpec"]["template"]["spec"]), ("cpu", cpu)):
            limits = pod["containers"][0]["resources"]["limits"]
            assert "nvidia.com/gpu" not in limits and "tolerations" not in pod, (manifest, where)
        (term,) = cpu["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        avoided = {e["key"] for e in term["preference"]["matchExpressions"] if e["operator"] == "DoesNotExist"}
        assert avoided == GPU_NODE_LABELS, manifest
        # The heads take no Ray tasks: the CPU workers do.
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", manifest


def test_only_the_api_cpu_workers_offer_the_cpu_services_and_train_drivers(rayservice: Any) -> None:
    groups = {g["groupName"]: g for g in rayservice.body["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert _start_resources(groups["cpu"]) == {"serlens_cpu": 1000, "serlens_train_driver": 2}
    assert _start_resources(groups["gpu"]) == {}
    head = rayservice.body["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
    assert "resources" not in head


def test_the_rayservice_upgrades_to_a_new_cluster(rayservice: Any) -> None:
    assert rayservice.body["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_rayjob_runs_the_study_and_cleans_up(rayjob: Any) -> None:
    spec = rayjob.body["spec"]
    assert spec["entrypoint"].startswith(
        "serlens run --config deploy/crema-d.yaml --workdir /data/serlens --address auto"
    )
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0


def test_mlflow_serves_on_5000_from_its_volume(manifests: list[Any]) -> None:
    deployment = next(m for m in manifests if m.kind == "Deployment" and m.name == "mlflow").body
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    for flag, value in (("--host", "0.0.0.0"), ("--port", "5000")):
        assert command[command.index(flag) + 1] == value, flag
    # The stores come from the environment (the community chart's way), credentials optional.
    sources = container["envFrom"]
    assert {"configMapRef": {"name": "serlens-mlflow-stores"}} in sources
    assert {"secretRef": {"name": "serlens-mlflow-stores", "optional": True}} in sources
    stores = next(m for m in manifests if m.kind == "ConfigMap" and m.name == "serlens-mlflow-stores").body
    assert stores["data"] == {"MLFLOW_BACKEND_STORE_URI": "sqlite:////mlflow/mlflow.db",
                              "MLFLOW_ARTIFACTS_DESTINATION": "/mlflow/artifacts"}
    service = next(m for m in manifests if m.kind == "Service" and m.name == "mlflow").body
    assert [p["port"] for p in service["spec"]["ports"]] == [5000]
