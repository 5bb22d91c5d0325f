"""Checkpoints as MLflow 3 LoggedModels, the best one registered, and the data logged as datasets.

Each checkpoint folder becomes one LoggedModel (``models:/<model_id>``) of the fit's run, an
MLflow ``python_function`` model whose ``artifacts/checkpoint`` folder is the checkpoint as
``SpeechClassifier.save`` wrote it: a ``models:/`` URI and a local folder load through the same
transformers code (``serlens.shared.model_uris``), and ``mlflow.pyfunc.load_model`` users get
class probabilities from a waveform. The model is an output of its run at its step, and the
checkpoint's metrics are logged with its ``model_id``. The best checkpoint of a fit is registered
(``<registered_model>@<alias>``, ``serlens-ser@champion`` by default).

Every call is idempotent, so ``serlens.shared.run_logger`` can make it again after a lost reply:
a checkpoint's model is found by its run and step before one is created, a model version by its
``model_id``. Everything goes through an explicit client (``serlens.shared.tracking``).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException

from serlens.shared.console import quiet_logger
from serlens.shared.tracking import TrackingConfig, call, ensure_experiment

#: Where a checkpoint folder sits inside its LoggedModel's artifacts.
CHECKPOINT_ARTIFACT = "checkpoint"
#: LoggedModel tags: the fit (its config hash) and the checkpoint's step.
TRAIN_KEY_TAG = "serlens.train_key"
STEP_TAG = "serlens.checkpoint_step"
#: Model-version tag naming the LoggedModel it registers (the sqlite registry leaves ``model_id`` empty).
MODEL_ID_TAG = "serlens.model_id"
MODEL_TYPE = "speech-emotion-classifier"
#: The input example: a quarter of a second at 16 kHz.
EXAMPLE_SECONDS = 0.25


def checkpoint_model_name(step: int) -> str:
    """The LoggedModel name of a checkpoint (as its folder: ``step-000050``)."""
    return f"step-{step:06d}"


def input_example(sampling_rate: int = 16_000) -> np.ndarray:
    """A short waveform batch, ``(1, samples)`` float32: a 220 Hz tone of ``EXAMPLE_SECONDS``."""
    t = np.arange(int(sampling_rate * EXAMPLE_SECONDS)) / sampling_rate
    return (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)[None, :]


def model_signature(num_labels: int) -> Any:
    """Waveforms ``(batch, samples)`` float32 in, class probabilities ``(batch, num_labels)`` out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1), "waveform")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_labels), "probabilities")]),
    )


def _python_model() -> Any:
    """The pyfunc wrapper, built on first use so that importing this module stays light."""
    from serlens.shared.pyfunc_model import SpeechClassifierPyfunc

    return SpeechClassifierPyfunc()


def save_checkpoint_model(folder: Path, destination: Path, *, labels: Sequence[str], model: LoggedModel,
                          run_id: str, exclude: Iterable[str] = ()) -> Path:
    """Write a checkpoint folder as an MLflow pyfunc model (signature, input example) into ``destination``.

    The folder's files (less ``exclude``) land in ``artifacts/checkpoint`` of the model.
    """
    staged = Path(destination).with_name(CHECKPOINT_ARTIFACT)
    shutil.copytree(folder, staged, ignore=shutil.ignore_patterns(*exclude))
    with quiet_logger("mlflow"):
        _save_pyfunc(destination, staged, labels=labels, model=model, run_id=run_id)
    return destination


def _save_pyfunc(destination: Path, staged: Path, *, labels: Sequence[str], model: LoggedModel, run_id: str) -> None:
    import mlflow.pyfunc
    import torch
    import transformers
    from mlflow.models import Model

    from serlens import __version__

    mlflow.pyfunc.save_model(
        str(destination), python_model=_python_model(), artifacts={CHECKPOINT_ARTIFACT: str(staged)},
        signature=model_signature(len(labels)), input_example=input_example(),
        mlflow_model=Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id,
                           model_id=model.model_id, metadata={"labels": list(labels)}),
        # Stated, not inferred: inference would load the model in a subprocess at every checkpoint.
        pip_requirements=[f"serlens=={__version__}", f"torch=={torch.__version__.split('+')[0]}",
                          f"transformers=={transformers.__version__}"],
    )


def find_checkpoint_model(config: TrackingConfig, run_id: str, step: int) -> LoggedModel | None:
    """The LoggedModel of the run's checkpoint at ``step``, if one was created."""
    experiment_id = ensure_experiment(config)
    found = call(config, f"look up the model of step {step}", lambda c: c.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{checkpoint_model_name(step)}'",
    ).to_list())
    return found[0] if found else None


def checkpoint_models(config: TrackingConfig, run_id: str) -> dict[int, str]:
    """Every READY checkpoint model of a run: step -> ``model_id``."""
    experiment_id = ensure_experiment(config)
    found = call(config, f"list the models of run {run_id}", lambda c: c.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}'").to_list())
    return {int(m.tags[STEP_TAG]): m.model_id for m in found
            if m.status == LoggedModelStatus.READY and STEP_TAG in m.tags}


def log_checkpoint_model(config: TrackingConfig, run_id: str, folder: Path, *, step: int, train_key: str,
                         labels: Sequence[str], metric_rows: Sequence[Mapping[str, Any]],
                         dataset: tuple[str, str] | None = None, exclude: Iterable[str] = ()) -> str:
    """Log a checkpoint folder as a LoggedModel of ``run_id`` at ``step``; return its ``model_id``.

    Args:
        config: tracking config.
        run_id: the fit's run.
        folder: the checkpoint folder (``SpeechClassifier.save`` layout).
        step: its optimizer step.
        train_key: the fit's config hash (a tag).
        labels: class names, in index order.
        metric_rows: the checkpoint's metric rows ``{name, value, step, timestamp_ms}``, logged
            again with the model's id (same timestamps: the run's history gains nothing).
        dataset: ``(name, digest)`` of the validation set the ``val_*`` metrics were measured on.
        exclude: file names of the folder to leave out (the resume state).

    Raises:
        TrackingError: when MLflow cannot be reached after the retries.
    """
    model = find_checkpoint_model(config, run_id, step)
    if model is not None and model.status == LoggedModelStatus.READY:
        return model.model_id
    if model is None:
        experiment_id = ensure_experiment(config)
        model = call(config, f"create the model of step {step}", lambda c: c.create_logged_model(
            experiment_id, name=checkpoint_model_name(step), source_run_id=run_id, model_type=MODEL_TYPE,
            tags={TRAIN_KEY_TAG: train_key, STEP_TAG: str(step)}))
    model_id = model.model_id
    with tempfile.TemporaryDirectory(prefix="serlens-model-") as tmp:
        saved = save_checkpoint_model(Path(folder), Path(tmp) / "model", labels=labels, model=model, run_id=run_id,
                                      exclude=exclude)
        call(config, f"upload the model of step {step}", lambda c: c.log_model_artifacts(model_id, str(saved)))
    metrics = [Metric(str(r["name"]), float(r["value"]), int(r["timestamp_ms"]), int(r["step"]), model_id=model_id,
                      **({"dataset_name": dataset[0], "dataset_digest": dataset[1]}
                         if dataset and str(r["name"]).startswith("val_") else {}))
               for r in metric_rows]
    call(config, f"link step {step} to its model", lambda c: _link(c, run_id, model_id, step, metrics))
    call(config, f"finalize the model of step {step}",
         lambda c: c.finalize_logged_model(model_id, LoggedModelStatus.READY))
    return model_id


def _link(client: MlflowClient, run_id: str, model_id: str, step: int, metrics: list[Metric]) -> None:
    """Make the model an output of the run at ``step`` (once: a fit killed after this call repeats it)."""
    outputs = client.get_run(run_id).outputs
    if model_id not in {o.model_id for o in (outputs.model_outputs if outputs else [])}:
        client.log_outputs(run_id, [LoggedModelOutput(model_id, step=step)])
    if metrics:
        client.log_batch(run_id, metrics=metrics)


def register_model(config: TrackingConfig, *, run_id: str, model_id: str, name: str, alias: str,
                   tags: Mapping[str, Any]) -> str:
    """Register a LoggedModel as a version of ``name`` (once) and point ``alias`` at it; return the version.

    Raises:
        TrackingError: when MLflow cannot be reached after the retries, or refuses the name.
    """
    def ensure_registered(client: MlflowClient) -> None:
        try:
            client.create_registered_model(name, description="serlens: fine-tuned speech emotion classifiers")
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    call(config, f"register {name}", ensure_registered)
    versions = call(config, f"list versions of {name}", lambda c: c.search_model_versions(
        f"name = '{name}' AND run_id = '{run_id}'"))
    version = next((v.version for v in versions if v.tags.get(MODEL_ID_TAG) == model_id), None)
    if version is None:
        # The source is the model's artifact location: a models:/ source would make the
        # registry look the model up through MLflow's global tracking URI, not this client's.
        logged = call(config, f"look up model {model_id}", lambda c: c.get_logged_model(model_id))
        version = call(config, f"add a version to {name}", lambda c: c.create_model_version(
            name, source=logged.artifact_location, run_id=run_id, model_id=model_id,
            tags={**{k: str(v) for k, v in tags.items()}, MODEL_ID_TAG: model_id})).version
    call(config, f"set {name}@{alias}", lambda c: c.set_registered_model_alias(name, alias, str(version)))
    return str(version)


def manifest_datasets(datasets: Mapping[str, Sequence[Mapping[str, Any]]], *, source: str) -> dict[str, Any]:
    """Clip manifests as MLflow datasets (computed locally, digests included): context -> dataset.

    Args:
        datasets: context (``training``, ``validation``) -> rows ``{clip_id, path, label}``.
        source: where the rows came from (a description or URI, shown by MLflow).
    """
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas

    with warnings.catch_warnings():
        # MLflow registers its local-file source twice and warns that a path is ambiguous between them.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return {context: from_pandas(pd.DataFrame(list(rows)), source=source, targets="label", name=context)
                for context, rows in datasets.items()}


def log_datasets(config: TrackingConfig, run_id: str, datasets: Mapping[str, Any]) -> None:
    """Log ``manifest_datasets`` as inputs of the run, each tagged with its context.

    Raises:
        TrackingError: when MLflow cannot be reached after the retries.
    """
    from mlflow.entities import DatasetInput, InputTag

    inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
              for context, dataset in datasets.items()]
    call(config, "log the datasets", lambda c: c.log_inputs(run_id, datasets=inputs))
