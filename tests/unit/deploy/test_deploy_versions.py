"""One Ray version everywhere (image tag, rayVersion, pyproject pin) and one serlens version
(pyproject, the image the Dockerfile builds, the image the manifests run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

REPO_ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO_ROOT / "Dockerfile"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _pinned_ray_version() -> str:
    pins = [dep for dep in _pyproject()["project"]["dependencies"] if re.match(r"ray\b", dep)]
    assert len(pins) == 1, f"expected one ray requirement in pyproject.toml, found {pins}"
    match = re.fullmatch(r"ray(\[[^\]]*\])?==(\d+\.\d+\.\d+)", pins[0].replace(" ", ""))
    assert match, f"ray must be pinned exactly (ray[serve]==X.Y.Z), not {pins[0]!r}"
    return match.group(2)


def _dockerfile_ray_tags() -> set[str]:
    return set(re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)-py\d+-gpu", DOCKERFILE.read_text()))


def test_ray_version_is_the_same_in_pyproject_dockerfile_and_manifests(
    manifests: list[Any],
) -> None:
    pinned = _pinned_ray_version()
    assert _dockerfile_ray_tags() == {pinned}, (
        f"Dockerfile base tags {_dockerfile_ray_tags()} vs pyproject {pinned}"
    )
    # The image's build-time check compares against the same version.
    assert f"ray.__version__ != '{pinned}'" in DOCKERFILE.read_text()
    ray_versions = {}
    for manifest in manifests:
        if manifest.kind == "RayService":
            ray_versions[str(manifest)] = manifest.body["spec"]["rayClusterConfig"]["rayVersion"]
        elif manifest.kind == "RayJob":
            ray_versions[str(manifest)] = manifest.body["spec"]["rayClusterSpec"]["rayVersion"]
    assert len(ray_versions) == 2, ray_versions
    assert set(ray_versions.values()) == {pinned}, ray_versions


def test_rayversion_is_a_quoted_string_in_the_yaml() -> None:
    # Unquoted, 2.50 would parse as a float: the CRD wants a string.
    for name in ("rayservice.yaml", "study/rayjob.yaml"):
        text = (REPO_ROOT / "k8s" / name).read_text()
        assert re.search(r'^\s+rayVersion: "\d+\.\d+\.\d+"$', text, re.M), name


def test_serlens_version_is_the_same_in_pyproject_dockerfile_and_images(
    templates: list[Any],
) -> None:
    version = _pyproject()["project"]["version"]
    assert re.search(rf"^ARG SERLENS_VERSION={re.escape(version)}$", DOCKERFILE.read_text(), re.M)
    images = {c["image"] for t in templates for c in t.spec.get("containers", [])}
    assert images == {f"serlens:{version}", f"serlens-mlflow:{version}"}, (
        f"every pod runs an image of pyproject's version: {images}"
    )
    mlflow_pods = {str(t) for t in templates for c in t.spec["containers"] if c["image"].startswith("serlens-mlflow:")}
    assert mlflow_pods == {"k8s:Deployment/mlflow:spec.template.spec"}, mlflow_pods
    # One place sets them for every kustomization (k8s/image, a component).
    component = yaml.safe_load((REPO_ROOT / "k8s" / "image" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    assert component["images"] == [{"name": "serlens", "newTag": version},
                                   {"name": "serlens-mlflow", "newTag": version}]


def test_the_mlflow_image_pins_the_tested_mlflow() -> None:
    import mlflow

    requirements = (REPO_ROOT / "docker" / "mlflow" / "requirements.txt").read_text().splitlines()
    assert f"mlflow[auth]=={mlflow.__version__}" in requirements
    for driver in ("psycopg2-binary", "boto3", "google-cloud-storage", "azure-storage-blob"):
        assert any(line.startswith(driver) for line in requirements), driver


def test_installed_ray_is_the_pinned_one() -> None:
    import ray

    assert ray.__version__ == _pinned_ray_version()
