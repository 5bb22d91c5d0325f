"""TrainerService end to end on a tiny random WavLM, generated clips, and MLflow on sqlite."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from support.trainer import LABELS, SMALL, make_clips

from serlens.shared import logged_models, model_uris, tracking
from serlens.shared.audio import read_wav, write_wav
from serlens.shared.errors import InvalidConfigError, InvalidManifestError
from serlens.shared.models import HEAD_FILENAME, SpeechClassifier, create_random_encoder, load_encoder, prepare_batch
from serlens.shared.tracking_artifacts import MANIFEST_FILENAME, verify_folder
from serlens.trainer.checkpoints import TRAINER_STATE_FILENAME
from serlens.trainer.config import TrainArgs
from serlens.trainer.data import manifest_datasets
from serlens.trainer.figures import plot_training
from serlens.trainer.service import TrainClip, TrainerService


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    model = str(create_random_encoder(root / "m"))
    train = make_clips(root / "audio", per_label=6, seed=1)
    validation = make_clips(root / "audio", per_label=3, seed=2)
    tracking_cfg = tracking.tracking_config(root, tracking_uri=f"sqlite:///{root}/mlflow.db")
    return dict(root=root, model=model, train=train, validation=validation, tracking=tracking_cfg)


def fit(setup, output, *, key="tk", **overrides):
    config = TrainArgs(**{**SMALL, **overrides}).to_config()
    service = TrainerService(config=config, tracking=setup["tracking"])
    return service.fit(
        model=setup["model"],
        train=setup["train"],
        validation=setup["validation"],
        labels=LABELS,
        output_dir=setup["root"] / output,
        train_key=key,
        progress=False,
    )


@pytest.fixture(scope="module")
def full(setup):
    return fit(setup, "full")


def state_dicts(folder):
    model = SpeechClassifier.load(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_checkpoints_on_disk(setup, full):
    assert [c.step for c in full.checkpoints] == [0, 4, 8]
    assert full.steps == 8 and full.epochs == pytest.approx(8 / 3) and not full.stopped_early
    for ck in full.checkpoints:
        folder = setup["root"] / "full" / f"step-{ck.step:06d}"
        assert ck.local_path == str(folder)
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
        assert (folder / HEAD_FILENAME).is_file() and (folder / "labels.json").is_file()
        assert (folder / "preprocessor_config.json").is_file()
        # Only the latest checkpoint keeps the resume state.
        assert (folder / TRAINER_STATE_FILENAME).is_file() == (ck.step == 8)
        assert ck.uri == f"runs:/{full.run_id}/checkpoints/step-{ck.step:06d}"
        assert np.isfinite(ck.val_loss) and 0.0 <= ck.val_f1_macro <= 1.0
        assert ck.epoch == pytest.approx(ck.step / 3)
    assert full.checkpoints[0].train_loss is None and full.checkpoints[1].train_loss > 0
    loaded = SpeechClassifier.load(full.checkpoints[-1].local_path)
    assert loaded.labels == list(LABELS) and loaded.bundle.num_layers == 4


def test_checkpoint_zero_is_the_pretrained_encoder(setup, full):
    pretrained, _ = load_encoder(setup["model"])
    step0 = SpeechClassifier.load(full.checkpoints[0].local_path)
    step8 = SpeechClassifier.load(full.checkpoints[-1].local_path)
    for name, value in pretrained.state_dict().items():
        assert torch.equal(step0.encoder.state_dict()[name], value), name
    # Training moved the transformer but not the frozen CNN feature encoder.
    changed = [
        n
        for n, v in pretrained.state_dict().items()
        if not torch.equal(step8.encoder.state_dict()[n], v)
    ]
    assert changed and not any(n.startswith("feature_extractor.") for n in changed)
    assert not torch.equal(step0.head.weight, step8.head.weight)


def test_metrics_and_learning(full):
    names = {m["name"] for m in full.metrics}
    assert names == {"train_loss", "lr", "val_loss", "val_f1_macro", "val_accuracy"}
    assert sorted(m["step"] for m in full.metrics if m["name"] == "train_loss") == list(range(1, 9))
    val = {m["step"]: m["value"] for m in full.metrics if m["name"] == "val_loss"}
    assert sorted(val) == [0, 2, 4, 6, 8]
    assert all(m["epoch"] == pytest.approx(m["step"] / 3) for m in full.metrics)
    # The three tones are easy to tell apart: the validation loss falls.
    assert val[8] < val[0]


def test_mlflow_run(setup, full):
    client = tracking.mlflow_client(setup["tracking"])
    run = client.get_run(full.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["serlens.train_key"] == "tk" and run.data.tags["serlens"] == "trainer"
    assert run.data.tags["serlens.model"] == setup["model"]
    assert (
        run.data.params["train.batch_size"] == "4"
        and run.data.params["data.labels"] == "LOW,MID,HIGH"
    )
    assert run.data.params["data.num_train_clips"] == "18"
    for name in ("train_loss", "val_loss", "val_f1_macro"):
        logged = {(m.step, m.value) for m in client.get_metric_history(full.run_id, name)}
        assert logged == {(m["step"], m["value"]) for m in full.metrics if m["name"] == name}
    for step in (0, 4, 8):
        listed = {
            a.path.rsplit("/", 1)[-1]
            for a in client.list_artifacts(full.run_id, f"checkpoints/step-{step:06d}")
        }
        assert {"config.json", "model.safetensors", HEAD_FILENAME, "labels.json", MANIFEST_FILENAME} <= listed
        assert TRAINER_STATE_FILENAME not in listed
        folder = setup["root"] / "full" / f"step-{step:06d}"
        assert verify_folder(setup["tracking"], full.run_id, folder, f"checkpoints/step-{step:06d}",
                             exclude={TRAINER_STATE_FILENAME}) == []
    # The trainer draws no figures: the report draws the training curves from the store.
    assert client.list_artifacts(full.run_id, "figures") == []
    assert not list((setup["root"] / "full").glob("*.png"))


def test_resume_matches_an_uninterrupted_fit(setup, full):
    first = fit(setup, "resumed", max_steps=4)
    assert [c.step for c in first.checkpoints] == [0, 4]
    second = fit(setup, "resumed", max_steps=8)
    assert second.run_id == first.run_id  # same MLflow run
    assert [c.step for c in second.checkpoints] == [0, 4, 8]
    assert not (setup["root"] / "resumed" / "step-000004" / TRAINER_STATE_FILENAME).exists()
    resumed, uninterrupted = (
        state_dicts(second.checkpoints[-1].local_path),
        state_dicts(full.checkpoints[-1].local_path),
    )
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)
    ours = [(m["step"], m["name"]) for m in second.metrics]
    assert ours == [(m["step"], m["name"]) for m in full.metrics]
    np.testing.assert_allclose(
        [m["value"] for m in second.metrics],
        [m["value"] for m in full.metrics],
        rtol=1e-5,
        atol=1e-6,
    )
    run = tracking.mlflow_client(setup["tracking"]).get_run(second.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["serlens.resumed_from_step"] == "4"
    # Resuming a finished fit does no more work and gives the same answer.
    again = fit(setup, "resumed", max_steps=8)
    assert [dataclasses.astuple(c) for c in again.checkpoints] == [
        dataclasses.astuple(c) for c in second.checkpoints
    ]
    # A resume with settings that change the trajectory is refused, naming them.
    with pytest.raises(InvalidConfigError, match="lr=0.002"):
        fit(setup, "resumed", lr=1e-3)
    with pytest.raises(InvalidConfigError, match="resume=True"):
        TrainerService(config=TrainArgs(**SMALL).to_config(), tracking=setup["tracking"]).fit(
            model=setup["model"],
            train=setup["train"],
            validation=setup["validation"],
            labels=LABELS,
            output_dir=setup["root"] / "resumed",
            train_key="tk",
            resume=False,
            progress=False,
        )


def test_early_stopping_ends_the_fit(setup):
    # Nothing improves by 10 nats: the second scheduled validation (step 4) stops the fit.
    result = fit(
        setup,
        "early",
        key="tk-early",
        early_stopping_patience=1,
        early_stopping_min_delta=10.0,
        log_checkpoints_to_mlflow=False,
        checkpoint_every_steps=3,
    )
    assert result.stopped_early and result.steps == 4
    assert [c.step for c in result.checkpoints] == [0, 3]
    assert result.checkpoints[1].uri.startswith("file://")
    # An off-grid checkpoint (step 3) is validated too, without feeding early stopping.
    assert sorted(m["step"] for m in result.metrics if m["name"] == "val_loss") == [0, 2, 3, 4]


def test_bad_input_is_refused_by_name(setup, tmp_path):
    train, validation = setup["train"], setup["validation"]
    service = TrainerService(config=TrainArgs(**SMALL).to_config(), tracking=setup["tracking"])

    def run(train_clips, labels=LABELS):
        return service.fit(
            model=setup["model"],
            train=train_clips,
            validation=validation,
            labels=labels,
            output_dir=tmp_path / "out",
            train_key="bad",
            progress=False,
        )

    with pytest.raises(InvalidConfigError, match="train set is empty"):
        run([])
    with pytest.raises(InvalidManifestError, match="label 'ANG' is not one of") as err:
        run([*train[:3], dataclasses.replace(train[3], label="ANG")])
    assert err.value.problems[0][0].startswith(train[3].clip_id)
    missing = TrainClip(clip_id="gone", path=str(tmp_path / "gone.wav"), label="LOW")
    with pytest.raises(InvalidManifestError, match=r"gone \(.*gone\.wav\): file not found"):
        run([*train[:3], missing])
    other_rate = tmp_path / "8k.wav"
    write_wav(other_rate, np.zeros(8_000, dtype=np.float32) + 0.1, 8_000)
    with pytest.raises(InvalidManifestError, match="8000 Hz"):
        run([TrainClip(clip_id="8k", path=str(other_rate), label="LOW")])
    with pytest.raises(InvalidConfigError, match="distinct"):
        run(train, labels=("LOW", "LOW", "HIGH"))
    assert not (tmp_path / "out").exists()


def test_training_figure(setup, full, tmp_path):
    png, svg = plot_training(
        full.metrics,
        [c.step for c in full.checkpoints],
        tmp_path / "fig" / "training",
        early_stop_step=8,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and svg.stat().st_size > 20_000


def test_an_unreachable_tracking_store_stops_the_fit_before_it_trains(setup, tmp_path):
    from support.mlflow_server import free_port

    from serlens.shared.errors import TrackingError

    down = tracking.TrackingConfig(tracking_uri=f"http://127.0.0.1:{free_port()}", artifact_location=None,
                                   retry_backoff_s=0.05)
    service = TrainerService(config=TrainArgs(**SMALL).to_config(), tracking=down)
    with pytest.raises(TrackingError, match="try 3 of 3"):
        service.fit(model=setup["model"], train=setup["train"], validation=setup["validation"], labels=LABELS,
                    output_dir=tmp_path / "out", train_key="down", progress=False)
    assert not list((tmp_path / "out").glob("step-*"))  # nothing trained, nothing to resume


# ---------------------------------------------------------------------- MLflow 3 model objects


def test_every_checkpoint_is_a_logged_model_with_its_step_and_metrics(setup, full):
    from mlflow.models import Model

    client = tracking.mlflow_client(setup["tracking"])
    models = logged_models.checkpoint_models(setup["tracking"], full.run_id)
    assert sorted(models) == [0, 4, 8]
    outputs = {o.model_id: o.step for o in client.get_run(full.run_id).outputs.model_outputs}
    assert outputs == {model_id: step for step, model_id in models.items()}
    for ck in full.checkpoints:
        model = client.get_logged_model(models[ck.step])
        assert model.status == LoggedModelStatus.READY and model.source_run_id == full.run_id
        assert model.tags[logged_models.TRAIN_KEY_TAG] == "tk"
        linked = {(m.key, m.step): m for m in model.metrics}
        assert linked["val_loss", ck.step].value == pytest.approx(ck.val_loss)
        assert linked["val_f1_macro", ck.step].value == pytest.approx(ck.val_f1_macro)
        assert linked["val_loss", ck.step].dataset_name == "validation"
        local = Path(model.artifact_location.removeprefix("file://"))
        mlmodel = Model.load(str(local))
        assert [s.shape for s in mlmodel.signature.inputs.inputs] == [(-1, -1)]
        assert [s.shape for s in mlmodel.signature.outputs.inputs] == [(-1, len(LABELS))]
        assert mlmodel.load_input_example(str(local))["waveform"].shape == (1, 4000)
        packed = local / "artifacts" / logged_models.CHECKPOINT_ARTIFACT
        assert {p.name for p in packed.iterdir()} >= {"config.json", "model.safetensors", HEAD_FILENAME}
        assert not (packed / TRAINER_STATE_FILENAME).exists()  # the optimizer state stays local
    # Logged again with the model's id, the run's own history still holds each value once.
    assert len(client.get_metric_history(full.run_id, "val_loss")) == 5


def test_the_best_checkpoint_is_registered_as_champion(setup, full):
    client = tracking.mlflow_client(setup["tracking"])
    best = min(full.checkpoints, key=lambda c: c.val_loss)
    model_id = logged_models.checkpoint_models(setup["tracking"], full.run_id)[best.step]
    [version] = [v for v in client.search_model_versions("name = 'serlens-ser'")
                 if v.tags.get(logged_models.MODEL_ID_TAG) == model_id]
    assert version.run_id == full.run_id and version.tags["serlens.checkpoint_step"] == str(best.step)
    champion = client.get_model_version_by_alias("serlens-ser", "champion")  # this fit's, or a later one's
    assert champion.tags["serlens.checkpoint_step"] == str(best.step)
    assert model_uris.resolve(setup["tracking"], "models:/serlens-ser@champion").version == str(champion.version)


def test_a_models_uri_loads_and_predicts_as_the_local_checkpoint(setup, full, tmp_path, monkeypatch):
    from mlflow.pyfunc import load_model

    from serlens.api.promotions import served_model
    from serlens.predict.config import PredictArgs
    from serlens.predict.service import PredictService

    best = min(full.checkpoints, key=lambda c: c.val_loss)
    model_id = logged_models.checkpoint_models(setup["tracking"], full.run_id)[best.step]
    client = tracking.mlflow_client(setup["tracking"])
    [version] = [v.version for v in client.search_model_versions("name = 'serlens-ser'")
                 if v.tags.get(logged_models.MODEL_ID_TAG) == model_id]
    folder = model_uris.download(setup["tracking"], f"models:/serlens-ser/{version}", tmp_path / "cache")
    assert folder == tmp_path / "cache" / "serlens-ser" / f"v{version}" / "artifacts" / "checkpoint"
    signal, _ = read_wav(setup["validation"][0].path)
    values, mask = prepare_batch([signal], SpeechClassifier.load(best.local_path).bundle)
    with torch.no_grad():
        local = SpeechClassifier.load(best.local_path)(values, mask)
        remote = SpeechClassifier.load(folder)(values, mask)
    torch.testing.assert_close(remote, local, rtol=0, atol=0)  # the same weights, bit for bit
    # The pyfunc face gives the same probabilities from the logged input example.
    example = logged_models.input_example()
    probabilities = load_model(str(folder.parents[1])).predict(example)
    with torch.no_grad():
        expected = torch.softmax(SpeechClassifier.load(best.local_path)(*prepare_batch(
            list(example), SpeechClassifier.load(best.local_path).bundle)), -1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    # /predict's model setting: the same URI, resolved through the workdir's tracking store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", setup["tracking"].tracking_uri)
    served = served_model(f"models:/serlens-ser/{version}", tmp_path / "api-work")
    predict = PredictService(config=PredictArgs(device="cpu").to_config(), checkpoint=served)
    reference = PredictService(config=PredictArgs(device="cpu").to_config(), checkpoint=best.local_path)
    assert predict.process_signal(signal, 16_000) == pytest.approx(reference.process_signal(signal, 16_000), abs=0)


def test_the_manifests_are_logged_as_datasets_and_the_run_name_is_readable(setup, full):
    run = tracking.mlflow_client(setup["tracking"]).get_run(full.run_id)
    logged = {d.dataset.name: (d.dataset.digest, {t.key: t.value for t in d.tags}) for d in run.inputs.dataset_inputs}
    expected = manifest_datasets(setup["train"], setup["validation"])
    assert logged == {name: (dataset.digest, {"mlflow.data.context": name}) for name, dataset in expected.items()}
    assert run.info.run_name == "m · lr 0.002 · tk"
    assert run.data.tags["serlens.train_key"] == "tk"  # the whole config hash, as a tag


def test_the_analyses_are_an_evaluation_of_the_checkpoint_models(setup, full, tmp_path):
    from serlens.pipeline.evaluation import log_evaluation

    figure = tmp_path / "cka.png"
    figure.write_bytes(b"\x89PNG not really")
    summary = {0: {"cka_linear_max": 0.25}, 8: {"cka_linear_max": 0.5, "probe_f1_macro_max": 0.75}}
    kwargs = dict(training_run_id=full.run_id, train_key="tk", analysis_key="ak", summary=summary, files=[figure],
                  run_name="analysis · m · tk")
    run_id = log_evaluation(setup["tracking"], **kwargs)
    assert log_evaluation(setup["tracking"], **kwargs) == run_id  # once per analysis key
    client = tracking.mlflow_client(setup["tracking"])
    models = logged_models.checkpoint_models(setup["tracking"], full.run_id)
    run = client.get_run(run_id)
    assert {m.model_id for m in run.inputs.model_inputs} == set(models.values())
    assert [a.path for a in client.list_artifacts(run_id, "report")] == ["report/cka.png"]
    on_model = {(m.key, m.run_id): m.value for m in client.get_logged_model(models[8]).metrics}
    assert on_model["cka_linear_max", run_id] == 0.5 and on_model["probe_f1_macro_max", run_id] == 0.75
    assert ("cka_linear_max", run_id) not in {(m.key, m.run_id) for m in client.get_logged_model(models[4]).metrics}
