"""The served model changes only by an explicit promotion; nothing promoted is a clear 404."""

from __future__ import annotations

import pytest
from support.demo_workdir import write_demo_workdir

from serlens.api.promotions import current_promotion, main, promote
from serlens.api.records import CheckpointIndex
from serlens.shared.errors import NotFoundError
from serlens.shared.store import FeatureStore
from serlens.shared.workdir import Workdir


def test_nothing_promoted_is_a_clear_404_and_a_configured_model_needs_none(tmp_path):
    index = CheckpointIndex(FeatureStore(tmp_path / "store").init(), Workdir(tmp_path), default_model=None)
    with pytest.raises(NotFoundError, match="no model is promoted"):
        index.resolve(None)
    external = CheckpointIndex(FeatureStore(tmp_path / "store"), Workdir(tmp_path), default_model="/models/x")
    assert external.resolve(None).local_path == "/models/x"


def test_a_newer_run_is_not_served_until_promoted(tmp_path):
    paths = Workdir(write_demo_workdir(tmp_path, train_key="old", steps=(0, 5), with_results=False))
    write_demo_workdir(tmp_path, train_key="new", steps=(0, 7), with_results=False, promote=False)
    index = CheckpointIndex(paths.store, paths, default_model=None, ttl_s=0)
    assert (index.resolve(None).train_key, index.resolve(None).checkpoint_step) == ("old", 5)
    assert index.resolve(0).train_key == "old"  # a step means a step of the promoted run
    with pytest.raises(NotFoundError, match="steps: \\[0, 5\\]"):
        index.resolve(7)
    promote(paths, train_key="new", checkpoint_step=7, promoted_by="test")
    assert (index.resolve(None).train_key, index.resolve(None).checkpoint_step) == ("new", 7)
    with pytest.raises(NotFoundError):
        promote(paths, train_key="new", checkpoint_step=3, promoted_by="test")


def test_the_command_promotes_and_shows(tmp_path, capsys):
    write_demo_workdir(tmp_path, train_key="run", steps=(0, 4), with_results=False, promote=False)
    assert main(["--workdir", str(tmp_path), "show"]) == 0 and "nothing promoted" in capsys.readouterr().out
    assert main(["--workdir", str(tmp_path), "promote", "--train-key", "run", "--step", "4"]) == 0
    row = current_promotion(Workdir(tmp_path).store)
    assert (row["train_key"], row["checkpoint_step"]) == ("run", 4) and row["promoted_by"].startswith("cli:")
    assert main(["--workdir", str(tmp_path), "promote", "--train-key", "run", "--step", "9"]) == 2
