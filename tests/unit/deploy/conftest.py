"""Fixtures of the offline deployment checks: what ``kubectl apply -k`` applies from k8s/ (the
serving stack, the study, the data loader), rendered, and their pods.

Only fixtures are shared (test modules do not import from here: other test folders have a
``conftest`` module of their own).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.kustomize import build

REPO_ROOT = Path(__file__).resolve().parents[3]
K8S_DIR = REPO_ROOT / "k8s"
KUBERAY_SCHEMAS = REPO_ROOT / "tests" / "data" / "kuberay-v1.7.0"
#: The kustomizations people apply, each with its own command (README, "Deploy").
KUSTOMIZATIONS = (K8S_DIR, K8S_DIR / "study", K8S_DIR / "loader")


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the kustomization it came from."""

    path: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    def __str__(self) -> str:
        return f"{self.path.name}:{self.kind}/{self.name}"


@dataclass(frozen=True)
class PodTemplate:
    """A pod spec found inside a manifest, with where it was found (``where``)."""

    manifest: Manifest
    where: str
    spec: dict[str, Any]
    #: The pod runs to completion (job submitter, one-off loader): no probes expected.
    batch: bool

    def __str__(self) -> str:
        return f"{self.manifest}:{self.where}"


def load_manifests() -> list[Manifest]:
    """Every object of every kustomization in ``KUSTOMIZATIONS``, rendered, in file order."""
    return [Manifest(folder, body) for folder in KUSTOMIZATIONS for body in build(folder)]


def ray_cluster_specs(manifest: Manifest) -> Iterator[tuple[str, dict[str, Any]]]:
    """The RayCluster spec inside a RayService or RayJob (or the RayCluster's own spec)."""
    spec = manifest.body.get("spec", {})
    if manifest.kind == "RayService":
        yield "spec.rayClusterConfig", spec["rayClusterConfig"]
    elif manifest.kind == "RayJob":
        yield "spec.rayClusterSpec", spec["rayClusterSpec"]
    elif manifest.kind == "RayCluster":
        yield "spec", spec


def pod_templates(manifest: Manifest) -> Iterator[PodTemplate]:
    """Every pod spec a manifest creates pods from."""
    body = manifest.body
    if manifest.kind == "Pod":
        yield PodTemplate(
            manifest, "spec", body["spec"], batch=body["spec"].get("restartPolicy") == "Never"
        )
    elif manifest.kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        yield PodTemplate(
            manifest,
            "spec.template.spec",
            body["spec"]["template"]["spec"],
            batch=manifest.kind == "Job",
        )
    for where, cluster in ray_cluster_specs(manifest):
        yield PodTemplate(
            manifest,
            f"{where}.headGroupSpec",
            cluster["headGroupSpec"]["template"]["spec"],
            batch=False,
        )
        for group in cluster.get("workerGroupSpecs", []):
            yield PodTemplate(
                manifest,
                f"{where}.workerGroupSpecs[{group['groupName']}]",
                group["template"]["spec"],
                batch=False,
            )
    if manifest.kind == "RayJob" and "submitterPodTemplate" in body["spec"]:
        yield PodTemplate(
            manifest,
            "spec.submitterPodTemplate",
            body["spec"]["submitterPodTemplate"]["spec"],
            batch=True,
        )


@pytest.fixture(scope="session")
def manifests() -> list[Manifest]:
    found = load_manifests()
    assert found, f"no manifests under {K8S_DIR}"
    return found


@pytest.fixture(scope="session")
def templates(manifests: list[Manifest]) -> list[PodTemplate]:
    return [template for manifest in manifests for template in pod_templates(manifest)]


@pytest.fixture(scope="session")
def kuberay_schemas() -> dict[str, dict[str, Any]]:
    """The stored v1 openAPIV3Schema of RayCluster, RayJob and RayService, by kind."""
    return {
        kind: json.loads((KUBERAY_SCHEMAS / f"{kind.lower()}.schema.json").read_text())
        for kind in ("RayCluster", "RayJob", "RayService")
    }


def _only(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m.kind == kind]
    assert len(found) == 1, f"expected one {kind} in {K8S_DIR}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def rayservice(manifests: list[Manifest]) -> Manifest:
    return _only(manifests, "RayService")


@pytest.fixture(scope="session")
def rayjob(manifests: list[Manifest]) -> Manifest:
    return _only(manifests, "RayJob")
