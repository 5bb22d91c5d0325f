import dataclasses
import hashlib
import json
import pickle
import socket
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from serlens.shared import tracking, tracking_artifacts
from serlens.shared.errors import NotFoundError, TrackingError
from serlens.shared.run_logger import RunLogger


@pytest.fixture
def unused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    uri = tracking_artifacts.log_folder(
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
    assert listed == {"checkpoints/step-000000/a.txt", "checkpoints/step-000000/sub",
                      "checkpoints/step-000000/serlens-manifest.json"}
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
        tracking_artifacts.log_folder(config, run_id, tmp_path / "missing", "x")


def _open_store(uri, barrier, results):
    # Each process opens the fresh store at the same moment, as six Ray workers would.
    from serlens.shared import tracking as tracking_module

    barrier.wait()
    try:
        config = tracking_module.TrackingConfig(tracking_uri=uri, artifact_location=None)
        tracking_module.ensure_experiment(config)
        results.put("ok")
    except Exception as err:  # reported to the parent, which names it
        results.put(f"{type(err).__name__}: {err}")


def test_six_processes_open_a_fresh_store_at_once(tmp_path):
    import multiprocessing

    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (imported once, before forking)

    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    (tmp_path / "fresh").mkdir()
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(6), context.Queue()
    workers = [context.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(6)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert outcomes == ["ok"] * 6
    # The schema is whole: a later process (this one) opens it and logs a run.
    config = tracking.TrackingConfig(tracking_uri=uri, artifact_location=None)
    run_id = tracking.start_run(config, tags={})
    tracking.log_metrics(config, run_id, {"x": 1.0}, step=0)
    assert len(tracking.mlflow_client(config).search_experiments()) == 2  # Default and serlens


def test_an_unreachable_server_is_an_error_after_bounded_retries(unused_port):
    config = dataclasses.replace(
        tracking.TrackingConfig(tracking_uri=f"http://127.0.0.1:{unused_port}", artifact_location=None),
        retry_attempts=3, retry_backoff_s=0.2, request_timeout_s=2,
    )
    started = time.monotonic()
    with pytest.raises(TrackingError, match=rf"127.0.0.1:{unused_port}.*try 3 of 3") as err:
        tracking.run_exists(config, "0" * 32)  # unreachable is not "gone"
    assert 0.5 <= time.monotonic() - started < 10  # two waits of 0.2 and 0.4 s, no minutes of retries
    assert isinstance(err.value.__cause__, MlflowException)
    assert pickle.loads(pickle.dumps(err.value)).args == err.value.args  # crosses Ray intact


def test_artifact_manifest_detects_and_repairs_a_broken_upload(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tracking.tracking_config(tmp_path / "work")
    run_id = tracking.start_run(config, tags={})
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 100)
    (folder / "sub" / "config.json").write_text("{}")
    (folder / "trainer_state.pt").write_text("local only")
    tracking_artifacts.log_folder(config, run_id, folder, "checkpoints/step-000004", exclude={"trainer_state.pt"})
    assert tracking_artifacts.verify_folder(config, run_id, folder, "checkpoints/step-000004",
                                            exclude={"trainer_state.pt"}) == []
    remote = Path(tracking.mlflow_client(config).get_run(run_id).info.artifact_uri.removeprefix("file://"))
    stored = remote / "checkpoints/step-000004"
    manifest = json.loads((stored / tracking_artifacts.MANIFEST_FILENAME).read_text())["files"]
    assert set(manifest) == {"weights.bin", "sub/config.json"}
    assert manifest["weights.bin"]["sha256"] == hashlib.sha256((folder / "weights.bin").read_bytes()).hexdigest()

    # A crash mid-upload: one file cut short, one never sent, the manifest never written.
    with open(stored / "weights.bin", "r+b") as fh:
        fh.truncate(1000)
    (stored / "sub" / "config.json").unlink()
    (stored / tracking_artifacts.MANIFEST_FILENAME).unlink()
    problems = tracking_artifacts.verify_folder(config, run_id, folder, "checkpoints/step-000004",
                                                exclude={"trainer_state.pt"})
    assert sorted(problems) == sorted([
        "serlens-manifest.json: missing (upload unfinished)",
        "weights.bin: 1000 bytes, expected 25600",
        "sub/config.json: missing",
    ])
    # Same size, other bytes: only the hash can tell.
    assert tracking_artifacts.repair_folder(config, run_id, folder, "checkpoints/step-000004",
                                            exclude={"trainer_state.pt"}) == problems
    (stored / "weights.bin").write_bytes(bytes(25600))
    assert tracking_artifacts.verify_folder(config, run_id, folder, "checkpoints/step-000004",
                                            exclude={"trainer_state.pt"}) == ["weights.bin: SHA-256 differs"]
    tracking_artifacts.repair_folder(config, run_id, folder, "checkpoints/step-000004", exclude={"trainer_state.pt"})
    assert tracking_artifacts.verify_folder(config, run_id, folder, "checkpoints/step-000004",
                                            exclude={"trainer_state.pt"}) == []
    assert (stored / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()


def test_metric_rows_with_their_timestamps_log_once(tmp_path):
    config = tracking.tracking_config(tmp_path, tracking_uri=f"sqlite:///{tmp_path}/m.db")
    run_id = tracking.start_run(config, tags={})
    rows = [{"name": "train_loss", "value": 0.5 + i, "step": i, "timestamp_ms": 1_700_000_000_000 + i}
            for i in range(5)]
    tracking.log_metric_rows(config, run_id, rows)
    tracking.log_metric_rows(config, run_id, rows[2:])  # a replay after a lost reply, or a resume
    history = tracking.mlflow_client(config).get_metric_history(run_id, "train_loss")
    assert sorted((m.step, m.value, m.timestamp) for m in history) == [
        (r["step"], r["value"], r["timestamp_ms"]) for r in rows]


def test_run_logger_keeps_the_loop_free_while_the_server_is_down(unused_port):
    config = dataclasses.replace(
        tracking.TrackingConfig(tracking_uri=f"http://127.0.0.1:{unused_port}", artifact_location=None),
        retry_attempts=2, retry_backoff_s=0.1, request_timeout_s=2,
    )
    logger = RunLogger(config, "0" * 32, queue_size=8, reconnect_interval_s=0.2)
    started = time.monotonic()
    for step in range(200):  # far more calls than the queue holds
        logger.log_metrics([{"name": "train_loss", "value": 1.0, "step": step, "timestamp_ms": step}])
    assert time.monotonic() - started < 2.0
    with pytest.raises(TrackingError, match=r"missing 200 call\(s\).*first error: .*Connection refused|"
                                            r"missing 200 call\(s\).*first error: .*Max retries"):
        logger.close(timeout_s=1.0)
    assert logger.offline_since is not None
    with pytest.raises(TrackingError, match="closed"):
        logger.log_metrics([{"name": "x", "value": 1.0, "step": 0}])


def test_a_relative_sqlite_uri_keeps_its_lock_beside_the_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tracking.TrackingConfig(tracking_uri="sqlite:///sub/relative.db", artifact_location=None)
    tracking.start_run(config, tags={})
    assert (tmp_path / "sub" / "relative.db").is_file() and (tmp_path / "sub" / "relative.db.init.lock").is_file()
    absolute = tracking.tracking_config(tmp_path / "abs")
    tracking.start_run(absolute, tags={})
    assert (tmp_path / "abs" / "mlflow.db.init.lock").is_file()
