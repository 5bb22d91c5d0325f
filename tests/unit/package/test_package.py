"""The installed shape: one import package, its subpackages listed, configs as package data."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import serlens
from serlens.pipeline.config import SHIPPED_CONFIGS, load_study_args, resolve_config
from serlens.shared.errors import InvalidConfigError

REPO = Path(__file__).resolve().parents[3]
MAPPING = {"services": "serlens", "shared": "serlens.shared", "deploy": "serlens.deploy"}


def test_every_folder_with_an_init_is_a_listed_package():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = set()
    for root, name in MAPPING.items():
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"missing from pyproject: {found - listed}; listed but absent: {listed - found}"
    assert pyproject["tool"]["setuptools"]["package-dir"] == {v: k for k, v in MAPPING.items()}


def test_import_serlens_is_cheap_and_has_the_api():
    code = "import sys, serlens; print(sorted(m for m in ('torch', 'ray', 'opensmile') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert {"run_study", "open_store", "load_config", "__version__"} <= set(serlens.__all__)


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_shipped_configs_resolve_from_package_data(name):
    resource = resolve_config(name)
    assert resource.is_file() and resource.name == f"{name}.yaml"
    assert load_study_args(name).dataset.kind in ("demo", "crema-d")


def test_no_config_is_the_shipped_demo():
    assert load_study_args(None) == serlens.load_config("demo")


def test_a_missing_config_is_an_error_that_names_it(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InvalidConfigError, match="nope.yaml does not exist"):
        serlens.load_config(missing)
    with pytest.raises(InvalidConfigError, match="demo, crema-d"):
        load_study_args("cremad")


def test_a_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo").write_text("probe:\n  seeds: 2\n")
    assert load_study_args("demo").probe.seeds == 2


def test_run_study_rejects_overrides_on_validated_args():
    with pytest.raises(InvalidConfigError, match="overrides apply to a config file"):
        serlens.run_study(serlens.load_config(), overrides=["probe.seeds=2"])


def test_open_store_without_a_store_is_a_named_error(tmp_path):
    from serlens.shared.errors import StoreError

    with pytest.raises(StoreError, match="no feature store"):
        serlens.open_store(tmp_path)


def test_a_bad_set_is_named_with_a_suggestion():
    with pytest.raises(InvalidConfigError) as info:
        load_study_args(None, ["train.lrr=2e-5", "probe.seeds=0"])
    message = str(info.value)
    assert "train.lrr" in message and "(from --set train.lrr=2e-5)" in message and "did you mean 'train.lr'?" in message
    assert "(from --set probe.seeds=0)" in message


def test_a_bad_file_value_blames_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian:\n  lr: 1\n")
    with pytest.raises(InvalidConfigError, match=r"trian: .*bad.yaml.*did you mean 'train'"):
        load_study_args(bad)


def test_cli_version_and_config_show(capsys):
    from serlens.pipeline.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"serlens {serlens.__version__}"
    assert main(["config", "show", "--set", "probe.seeds=3"]) == 0
    assert "seeds: 3" in capsys.readouterr().out
    assert main(["config", "show", "--set", "probe.sedes=3"]) == 2
    assert "did you mean 'probe.seeds'?" in capsys.readouterr().err
