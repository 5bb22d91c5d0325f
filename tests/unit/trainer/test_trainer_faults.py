"""The trainer under faults: a killed fit resumed, a failing fit, a tracking server that goes away."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.entities import LoggedModelStatus
from support.mlflow_server import MlflowServer
from support.postgres import PostgresServer, find_bin
from support.trainer import LABELS, SMALL, make_clips

from serlens.shared import logged_models, tracking
from serlens.shared.models import SpeechClassifier, create_random_encoder
from serlens.shared.tracking_artifacts import verify_folder
from serlens.trainer.checkpoints import TRAINER_STATE_FILENAME, load_state
from serlens.trainer.config import TrainArgs
from serlens.trainer.service import TrainClip, TrainerService

pytestmark = pytest.mark.slow

FIT_SCRIPT = """
import json, sys
from pathlib import Path
from serlens.shared.tracking import tracking_config
from serlens.trainer.config import TrainArgs
from serlens.trainer.service import TrainClip, TrainerService

args = json.loads(Path(sys.argv[1]).read_text())
clips = {name: [TrainClip(**c) for c in args[name]] for name in ("train", "validation")}
TrainerService(config=TrainArgs(**args["settings"]).to_config(),
               tracking=tracking_config(Path(args["root"]), tracking_uri=args["tracking_uri"])).fit(
    model=args["model"], train=clips["train"], validation=clips["validation"], labels=args["labels"],
    output_dir=Path(args["output_dir"]), train_key=args["train_key"], progress=False)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return dict(root=root, model=str(create_random_encoder(root / "m")),
                train=make_clips(root / "audio", per_label=6, seed=1),
                validation=make_clips(root / "audio", per_label=3, seed=2))


def fit(data, output, tracking_config, *, key="tk", validation=None, **overrides):
    config = TrainArgs(**{**SMALL, **overrides}).to_config()
    return TrainerService(config=config, tracking=tracking_config).fit(
        model=data["model"], train=data["train"], validation=validation or data["validation"], labels=LABELS,
        output_dir=data["root"] / output, train_key=key, progress=False)


def weights(folder):
    return SpeechClassifier.load(folder).state_dict()


def wait_for(path, *, timeout_s=300, process=None):
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        assert process is None or process.poll() is None, "the fit ended before the fault could be injected"
        time.sleep(0.02)


def test_a_killed_fit_resumes_to_the_uninterrupted_weights(data):
    tracking_config = tracking.tracking_config(data["root"], tracking_uri=f"sqlite:///{data['root']}/kill.db")
    full = fit(data, "full", tracking_config, key="full")
    script, args = data["root"] / "fit.py", data["root"] / "args.json"
    script.write_text(FIT_SCRIPT)
    args.write_text(json.dumps({
        "settings": SMALL, "root": str(data["root"]), "tracking_uri": tracking_config.tracking_uri,
        "model": data["model"], "labels": LABELS, "output_dir": str(data["root"] / "killed"), "train_key": "tk",
        "train": [c.__dict__ for c in data["train"]], "validation": [c.__dict__ for c in data["validation"]],
    }))
    process = subprocess.Popen([sys.executable, str(script), str(args)])
    wait_for(data["root"] / "killed" / "step-000004" / TRAINER_STATE_FILENAME, process=process)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    # The kill landed mid-run: the state says step 4 of 8, and step 8 was never written.
    assert load_state(data["root"] / "killed" / "step-000004")["step"] == 4
    assert not (data["root"] / "killed" / "step-000008").exists()
    run_id = load_state(data["root"] / "killed" / "step-000004")["run_id"]
    client = tracking.mlflow_client(tracking_config)
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody could end it
    # Whatever the kill left of step 4's upload, cut its weights short as a crash mid-upload would.
    stored = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "checkpoints/step-000004"
    if (stored / "model.safetensors").is_file():
        with open(stored / "model.safetensors", "r+b") as fh:
            fh.truncate(100)
    folder = data["root"] / "killed" / "step-000004"
    assert verify_folder(tracking_config, run_id, folder, "checkpoints/step-000004", exclude={TRAINER_STATE_FILENAME})

    resumed = fit(data, "killed", tracking_config)
    assert resumed.run_id == run_id and [c.step for c in resumed.checkpoints] == [0, 4, 8]
    # One finished LoggedModel per checkpoint: step 4's, begun or not before the kill, finished once.
    models = client.search_logged_models([tracking.ensure_experiment(tracking_config)],
                                         filter_string=f"source_run_id = '{run_id}'").to_list()
    assert sorted(int(m.tags[logged_models.STEP_TAG]) for m in models) == [0, 4, 8]
    assert {m.status for m in models} == {LoggedModelStatus.READY}
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["serlens.resumed_from_step"] == "4"
    for name, value in weights(full.checkpoints[-1].local_path).items():
        torch.testing.assert_close(weights(resumed.checkpoints[-1].local_path)[name], value,
                                   rtol=1e-5, atol=1e-6, msg=name)
    for checkpoint in resumed.checkpoints:  # every upload complete, step 4's repaired
        assert verify_folder(tracking_config, run_id, checkpoint.local_path, f"checkpoints/step-{checkpoint.step:06d}",
                             exclude={TRAINER_STATE_FILENAME}) == []
    for name in ("train_loss", "val_loss"):  # the history once, replays and all
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
        assert logged == sorted((m["step"], m["value"]) for m in resumed.metrics if m["name"] == name)


def test_a_failing_fit_marks_its_run_failed_with_the_original_error(data, tmp_path):
    tracking_config = tracking.tracking_config(tmp_path, tracking_uri=f"sqlite:///{tmp_path}/fail.db")
    # A validation clip that goes away mid-fit (after the checks at the start passed).
    doomed = tmp_path / "doomed.wav"
    doomed.write_bytes(open(data["validation"][0].path, "rb").read())
    validation = [TrainClip("doomed", str(doomed), data["validation"][0].label), *data["validation"][1:]]
    output = tmp_path / "out"
    watcher = threading.Thread(target=lambda: (wait_for(output / "step-000004" / TRAINER_STATE_FILENAME),
                                               doomed.unlink()))
    watcher.start()
    with pytest.raises(Exception, match="doomed.wav") as raised:  # soundfile's own error, not ours
        fit(data, output, tracking_config, validation=validation)
    watcher.join()
    runs = tracking.mlflow_client(tracking_config).search_runs([tracking.ensure_experiment(tracking_config)])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["serlens.error"].startswith(f"{type(raised.value).__name__}: ")
    assert "doomed.wav" in runs[0].data.tags["serlens.error"]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_store_uri(request, tmp_path):
    """The tracking server's database: a SQLite file, or PostgreSQL as the Kubernetes manifests recommend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/server.db"
        return
    if find_bin("initdb") is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    postgres = PostgresServer()
    try:
        yield postgres.start()
    finally:
        postgres.stop()


@pytest.mark.integration
def test_a_tracking_server_that_goes_away_mid_fit(data, tmp_path, caplog, backend_store_uri):
    server = MlflowServer(backend_store_uri, tmp_path / "artifacts", tmp_path / "server.log")
    server.start()
    tracking_config = tracking.TrackingConfig(tracking_uri=server.uri, artifact_location=None,
                                              retry_backoff_s=0.1, request_timeout_s=5, catchup_timeout_s=240)
    output = tmp_path / "server-down"
    timeline = {}

    def outage():
        wait_for(output / "step-000004" / TRAINER_STATE_FILENAME)
        server.kill()
        timeline["killed"] = time.monotonic()
        wait_for(output / "step-000008" / TRAINER_STATE_FILENAME)  # training went on without MLflow
        timeline["trained"] = time.monotonic()
        server.start()

    watcher = threading.Thread(target=outage)
    watcher.start()
    try:
        with caplog.at_level("WARNING", logger="serlens.shared.run_logger"):
            result = fit(data, output, tracking_config, key="down")
        watcher.join()
        assert timeline["killed"] < timeline["trained"]
        assert any("unreachable" in r.getMessage() for r in caplog.records)  # the outage was felt
        client = tracking.mlflow_client(tracking_config)
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED" and result.steps == 8
        for name in ("train_loss", "lr", "val_loss", "val_f1_macro"):  # caught up, nothing twice
            logged = sorted((m.step, m.value) for m in client.get_metric_history(result.run_id, name))
            assert logged == sorted((m["step"], m["value"]) for m in result.metrics if m["name"] == name), name
        for checkpoint in result.checkpoints:
            assert verify_folder(tracking_config, result.run_id, checkpoint.local_path,
                                 f"checkpoints/step-{checkpoint.step:06d}", exclude={TRAINER_STATE_FILENAME}) == []
        # The models and the registration caught up too, through the server.
        assert sorted(logged_models.checkpoint_models(tracking_config, result.run_id)) == [0, 4, 8]
        assert client.get_model_version_by_alias("serlens-ser", "champion").run_id == result.run_id
    finally:
        server.kill()
