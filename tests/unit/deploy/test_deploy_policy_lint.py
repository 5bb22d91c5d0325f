"""The manifests as the release step renders them, checked by a policy linter (checkov).

checkov's Kubernetes checks (CKV_K8S_*: root, privileges, capabilities, probes, resources,
service-account tokens, read-only root filesystem, image digests, secrets, ...) run on what
every kustomization of k8s/ renders (the serving stack, the study, the loader, and the MLflow
options) with the images pinned by digest, which is what the README's release step
(``kustomize edit set image serlens=...@sha256:... serlens-mlflow=...@sha256:...``) deploys. CI installs
checkov in a virtual environment of its own (.ci/run) and names it in ``SERLENS_CHECKOV``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.kustomize import build, set_image, with_components

REPO_ROOT = Path(__file__).resolve().parents[3]
K8S_DIR = REPO_ROOT / "k8s"
CONFIG = REPO_ROOT / ".checkov.yaml"
DIGEST = "@sha256:" + "0" * 64
#: The MLflow options, all at once: PostgreSQL and one object store (the three share a policy name).
OPTIONS = ["mlflow/postgres", "mlflow/s3"]


def checkov() -> str:
    found = os.environ.get("SERLENS_CHECKOV") or shutil.which("checkov")
    if not found:
        pytest.skip("checkov is not installed (CI installs it: .ci/run; pip install checkov)")
    return found


def render_release(folder: Path) -> Path:
    """What the release step applies: k8s/ with both images pinned by digest, MLflow options on."""
    copy = with_components(K8S_DIR, folder.parent / "k8s-source", OPTIONS)
    set_image(copy / "image", f"serlens=registry.example.com/ml/serlens{DIGEST}",
              f"serlens-mlflow=registry.example.com/ml/serlens-mlflow{DIGEST}")
    folder.mkdir()
    for name in ("", "study", "loader"):
        objects = build(copy / name)
        (folder / f"{name or 'serving'}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return folder


def lint(folder: Path) -> dict:
    done = subprocess.run(
        [checkov(), "-d", str(folder), "--config-file", str(CONFIG), "--output", "json"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.stdout.strip(), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


def test_the_released_manifests_pass_every_policy_check(tmp_path: Path) -> None:
    report = lint(render_release(tmp_path / "k8s"))
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100  # the checks really ran on every object


def test_the_linter_catches_an_insecure_pod(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: serlens}\n"
        "spec:\n  hostNetwork: true\n  containers:\n    - name: c\n      image: busybox:latest\n"
        "      securityContext: {privileged: true, runAsUser: 0}\n"
    )
    failed = {c["check_id"] for c in lint(folder)["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_19", "CKV_K8S_22", "CKV_K8S_43"} <= failed, failed
