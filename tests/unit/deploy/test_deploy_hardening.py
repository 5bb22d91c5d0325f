"""Pod Security "restricted" and the rest of the cluster hardening, checked on every pod of k8s/.

What the namespace's ``pod-security.kubernetes.io/enforce: restricted`` would refuse at admission
is refused here first (the checks of the Pod Security Standards, restricted profile), plus
what the standard does not cover: read-only root filesystems, ephemeral-storage limits, no
service-account token where none is needed, Ray token auth, MLflow behind authentication.
"""

from __future__ import annotations

from typing import Any

import pytest

#: Volume types the restricted profile allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_violations(where: str, pod: dict[str, Any]) -> list[str]:
    """What the Pod Security Standards' restricted profile refuses in a pod spec."""
    problems = []
    pod_security = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{where}: {key}")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']} of type {sorted(kinds)}")
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name = f"{where}:{container['name']}"
        context = container.get("securityContext", {})
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities must drop ALL")
        if set(context.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if not context.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        if context.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = context.get("seccompProfile", pod_security.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        if any("hostPort" in port for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


def test_the_namespace_enforces_restricted(manifests: list[Any]) -> None:
    (namespace,) = [m.body for m in manifests if m.kind == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_pod_meets_pod_security_restricted(templates: list[Any]) -> None:
    assert [p for t in templates for p in restricted_violations(str(t), t.spec)] == []


def test_the_restricted_check_catches_what_admission_would_refuse() -> None:
    pod = {"containers": [{"name": "c", "securityContext": {"runAsNonRoot": True}}],
           "volumes": [{"name": "h", "hostPath": {"path": "/"}}], "hostNetwork": True}
    problems = restricted_violations("pod", pod)
    assert len(problems) == 5, problems  # hostNetwork, hostPath, escalation, capabilities, seccomp


def test_every_container_has_a_read_only_root_and_a_writable_tmp(templates: list[Any]) -> None:
    for template in templates:
        volumes = {v["name"]: v for v in template.spec.get("volumes", [])}
        for container in template.spec["containers"]:
            where = f"{template}:{container['name']}"
            assert container["securityContext"].get("readOnlyRootFilesystem") is True, where
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], where
            assert volumes[tmp[0]["name"]]["emptyDir"].get("sizeLimit"), where


def test_every_container_requests_and_limits_ephemeral_storage(templates: list[Any], rayservice: Any) -> None:
    resources = [(f"{t}:{c['name']}", c["resources"]) for t in templates for c in t.spec["containers"]]
    resources.append(("autoscaler", rayservice.body["spec"]["rayClusterConfig"]["autoscalerOptions"]["resources"]))
    for where, spec in resources:
        assert "ephemeral-storage" in spec["requests"] and "ephemeral-storage" in spec["limits"], where


def test_no_pod_mounts_a_service_account_token_but_the_autoscaler(templates: list[Any], rayservice: Any) -> None:
    for template in templates:
        assert template.spec.get("automountServiceAccountToken") is False, str(template)
    options = rayservice.body["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert options["securityContext"]["readOnlyRootFilesystem"] is True
    token_mount = [m for m in options["volumeMounts"] if m["mountPath"].endswith("kubernetes.io/serviceaccount")]
    head = rayservice.body["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    (volume,) = [v for v in head["volumes"] if v["name"] == token_mount[0]["name"]]
    assert any("serviceAccountToken" in source for source in volume["projected"]["sources"])
    head_container_mounts = {m["name"] for m in head["containers"][0]["volumeMounts"]}
    assert volume["name"] not in head_container_mounts, "the Ray head container must not get the token"


@pytest.mark.parametrize("kind", ["RayService", "RayJob"])
def test_ray_clusters_use_token_authentication(manifests: list[Any], kind: str) -> None:
    (body,) = [m.body for m in manifests if m.kind == kind]
    cluster = body["spec"]["rayClusterConfig" if kind == "RayService" else "rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}


def test_the_study_job_is_submitted_by_the_operator(rayjob: Any) -> None:
    assert rayjob.body["spec"]["submissionMode"] == "HTTPMode"
    assert "submitterPodTemplate" not in rayjob.body["spec"]


def test_mlflow_runs_behind_basic_auth_and_the_ray_pods_log_in(manifests: list[Any], templates: list[Any]) -> None:
    deployment = next(m for m in manifests if m.kind == "Deployment" and m.name == "mlflow").body
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "serlens-mlflow-auth"
    config = next(m for m in manifests if m.kind == "ConfigMap" and m.name == "serlens-mlflow-auth-config")
    assert "default_permission = NO_PERMISSIONS" in config.body["data"]["basic_auth.ini"]
    for template in templates:
        if template.manifest.kind in {"RayService", "RayJob"}:
            ray_env = {e["name"]: e for e in template.spec["containers"][0]["env"]}
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert ray_env[key]["valueFrom"]["secretKeyRef"]["name"] == "serlens-mlflow-auth", str(template)
