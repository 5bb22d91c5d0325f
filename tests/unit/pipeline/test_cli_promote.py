"""`serlens promote`: the only way the served model changes."""

from __future__ import annotations

from support.demo_workdir import write_demo_workdir

from serlens.api.promotions import current_promotion
from serlens.pipeline.cli import main
from serlens.shared.workdir import Workdir


def test_promote_a_given_checkpoint_and_refuse_a_missing_one(tmp_path, capsys):
    write_demo_workdir(tmp_path, train_key="k1", steps=(0, 10), with_results=False, promote=False)
    store = Workdir(tmp_path).store
    assert current_promotion(store) is None  # training wrote checkpoints; nothing is served yet
    assert main(["promote", "--workdir", str(tmp_path), "--train-key", "k1"]) == 0
    assert "serving checkpoint 10 of fine-tuning run k1" in capsys.readouterr().out
    assert (current_promotion(store)["train_key"], current_promotion(store)["checkpoint_step"]) == ("k1", 10)
    assert main(["promote", "--workdir", str(tmp_path), "--train-key", "k1", "--step", "7"]) == 2
    assert "no checkpoint 7" in capsys.readouterr().err
    assert current_promotion(store)["checkpoint_step"] == 10
