"""The kustomizations of k8s/: one image edit reaches every container of all three, the MLflow
options render to valid objects, and the Python rendering the other checks use is kustomize's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kustomize import build, containers, set_image, with_components

REPO_ROOT = Path(__file__).resolve().parents[3]
K8S_DIR = REPO_ROOT / "k8s"
FOLDERS = ("", "study", "loader")
OPTIONS = ("mlflow/postgres", "mlflow/s3", "mlflow/gcs", "mlflow/azure")
SERLENS = "registry.example.com/ml/serlens:1.2.3"
MLFLOW = "registry.example.com/ml/serlens-mlflow@sha256:" + "a" * 64


def _images(root: Path) -> dict[str, list[str]]:
    """Container image by kustomization, each container once."""
    return {name or "serving": [c["image"] for c in containers(build(root / name))] for name in FOLDERS}


def test_one_image_edit_sets_every_container_of_every_kustomization(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy)
    before = _images(copy)
    set_image(copy / "image", f"serlens={SERLENS}", f"serlens-mlflow={MLFLOW}")
    after = _images(copy)
    # head, CPU and GPU workers of the RayService, MLflow; the RayJob's three; the loader.
    assert {name: len(images) for name, images in after.items()} == {"serving": 4, "study": 3, "loader": 1}
    assert after["loader"] == [SERLENS] and set(after["study"]) == {SERLENS}
    assert sorted(after["serving"]) == sorted([SERLENS] * 3 + [MLFLOW])
    assert before != after


def test_the_image_edit_is_what_kustomize_edit_writes(tmp_path: Path) -> None:
    folder = tmp_path / "image"
    shutil.copytree(K8S_DIR / "image", folder)
    set_image(folder, f"serlens={SERLENS}", f"serlens-mlflow={MLFLOW}")
    written = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert written["kind"] == "Component"
    assert written["images"] == [
        {"name": "serlens", "newName": "registry.example.com/ml/serlens", "newTag": "1.2.3"},
        {"name": "serlens-mlflow", "newName": "registry.example.com/ml/serlens-mlflow", "digest": "sha256:" + "a" * 64},
    ]


def _kubectl_kustomize(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _by_identity(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize("options", [(), OPTIONS[:2], OPTIONS[2:3], OPTIONS[3:]],
                         ids=lambda o: "+".join(o) or "shipped")
def test_the_python_rendering_is_kustomizes(tmp_path: Path, options: tuple[str, ...]) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    root = with_components(K8S_DIR, tmp_path / "k8s", list(options))
    set_image(root / "image", f"serlens={SERLENS}", f"serlens-mlflow={MLFLOW}")
    for name in FOLDERS:
        ours, theirs = _by_identity(build(root / name)), _by_identity(_kubectl_kustomize(root / name))
        assert ours.keys() == theirs.keys(), name
        for identity, body in ours.items():
            assert body == theirs[identity], (name, identity)


def test_the_renderer_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    root = tmp_path / "k"
    root.mkdir()
    (root / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(ValueError, match="namePrefix"):
        build(root)


@pytest.mark.parametrize("option", OPTIONS)
def test_each_mlflow_option_renders_valid_objects_and_sets_its_store(tmp_path: Path, option: str) -> None:
    utils = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate is not installed")
    objects = build(with_components(K8S_DIR, tmp_path / "k8s", [option]))
    for body in objects:
        if body["apiVersion"] != "ray.io/v1":
            utils.validate(body, utils.latest_version(), strict=True)
    stores = _by_identity(objects)[("ConfigMap", "serlens-mlflow-stores")]["data"]
    auth = _by_identity(objects)[("ConfigMap", "serlens-mlflow-auth-config")]["data"]["basic_auth.ini"]
    scheme = {"mlflow/postgres": ("MLFLOW_BACKEND_STORE_URI", "postgresql://"),
              "mlflow/s3": ("MLFLOW_ARTIFACTS_DESTINATION", "s3://"),
              "mlflow/gcs": ("MLFLOW_ARTIFACTS_DESTINATION", "gs://"),
              "mlflow/azure": ("MLFLOW_ARTIFACTS_DESTINATION", "wasbs://")}[option]
    assert stores[scheme[0]].startswith(scheme[1])
    # The auth app's users move with the runs (PostgreSQL), and its settings stay strict.
    assert ("database_uri = postgresql://" in auth) is (option == "mlflow/postgres")
    assert "default_permission = NO_PERMISSIONS" in auth
