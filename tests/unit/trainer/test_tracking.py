from pathlib import Path

import pytest

from serlens.shared import tracking
from serlens.shared.errors import NotFoundError


def test_tracking_config_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = tracking.tracking_config(tmp_path)
    assert default.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert default.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert default.experiment == "serlens"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    from_env = tracking.tracking_config(tmp_path, experiment="other")
    assert from_env.tracking_uri == "http://mlflow:5000"
    assert from_env.artifact_location is None  # the server chooses
    assert from_env.experiment == "other"

    explicit = tracking.tracking_config(tmp_path, tracking_uri=f"sqlite:///{tmp_path}/x.db")
    assert explicit.tracking_uri == f"sqlite:///{tmp_path}/x.db"  # wins over the environment
    assert explicit.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_flatten_params():
    flat = tracking.flatten_params(
        {
            "train": {"lr": 1e-5, "opt": {"name": "adamw"}},
            "labels": ["a", "b"],
            "steps": None,
            "long": "x" * 10_000,
        }
    )
    assert flat == {
        "train.lr": "1e-05",
        "train.opt.name": "adamw",
        "labels": "a,b",
        "steps": "None",
        "long": "x" * 6000,
    }


def test_run_round_trip(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tracking.tracking_config(tmp_path / "work")
    experiment_id = tracking.ensure_experiment(config)
    assert tracking.ensure_experiment(config) == experiment_id  # idempotent
    client = tracking.mlflow_client(config)
    assert client.get_experiment(experiment_id).artifact_location == config.artifact_location

    run_id = tracking.start_run(config, tags={"serlens.train_key": "k1"}, run_name="k1")
    tracking.log_params(config, run_id, {"train": {"batch_size": 4}, "labels": ["ANG", "SAD"]})
    tracking.log_metrics(config, run_id, {"val_loss": 1.5, "val_f1_macro": 0.25}, step=0)
    tracking.log_metric_rows(config, run_id, [{"name": "val_loss", "value": 1.25, "step": 10}])
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    (folder / "skip.pt").write_text("big")
    uri = tracking.log_folder(
        config, run_id, folder, "checkpoints/step-000000", exclude={"skip.pt"}
    )
    assert uri == f"runs:/{run_id}/checkpoints/step-000000"
    assert tracking.has_artifacts(config, run_id, "checkpoints/step-000000")
    assert not tracking.has_artifacts(config, run_id, "checkpoints/step-000050")
    tracking.end_run(config, run_id)

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["serlens.train_key"] == "k1"
    assert run.data.params == {"train.batch_size": "4", "labels": "ANG,SAD"}
    history = client.get_metric_history(run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.5), (10, 1.25)]
    listed = {a.path for a in client.list_artifacts(run_id, "checkpoints/step-000000")}
    assert listed == {"checkpoints/step-000000/a.txt", "checkpoints/step-000000/sub"}
    stored = (
        Path(run.info.artifact_uri.removeprefix("file://")) / "checkpoints/step-000000/sub/b.txt"
    )
    assert stored.read_text() == "b" and str(stored).startswith(
        str(tmp_path / "work" / "mlartifacts")
    )
    assert tracking.run_exists(config, run_id) and not tracking.run_exists(config, "0" * 32)
    tracking.reopen_run(config, run_id)
    assert client.get_run(run_id).info.status == "RUNNING"

    with pytest.raises(NotFoundError, match="not a folder"):
        tracking.log_folder(config, run_id, tmp_path / "missing", "x")
