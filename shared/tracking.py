"""MLflow tracking: where runs go, and the few calls serlens makes.

This is the one module that resolves the tracking URI (``MLFLOW_TRACKING_URI`` itself is
read by ``serlens.shared.settings``, the one place that reads environment variables). Everything
goes through an explicit ``MlflowClient`` bound to a ``TrackingConfig`` (never the fluent
API's global state), so that several services, threads or Ray workers can log to
different stores in one process.

Without a server, runs go to a SQLite file in the work folder and artifacts to a folder
next to it::

    <workdir>/mlflow.db        runs, params, metrics, tags
    <workdir>/mlartifacts/     artifacts (checkpoints, figures), one folder per run
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from serlens.shared import settings
from serlens.shared.errors import NotFoundError

DB_FILENAME = "mlflow.db"
ARTIFACTS_DIRNAME = "mlartifacts"

# MLflow's limits (mlflow.utils.validation): longer values are refused by the server.
_MAX_PARAM_VALUE_LENGTH = 6000
_MAX_BATCH_PARAMS = 100
_MAX_BATCH_METRICS = 1000


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow runs and their artifacts go.

    Attributes:
        tracking_uri: the MLflow tracking URI (``sqlite:///...``, ``http://...``, ``file:...``).
        artifact_location: the artifact root of a newly created experiment (a URI), or None
            to let the tracking server choose.
        experiment: the experiment every run of this config belongs to.
    """

    tracking_uri: str
    artifact_location: str | None
    experiment: str = "serlens"


def tracking_config(
    workdir: Path, *, tracking_uri: str | None = None, experiment: str = "serlens"
) -> TrackingConfig:
    """Resolve where to track: explicit URI, else ``MLFLOW_TRACKING_URI``, else local SQLite.

    A SQLite store (the default, or an explicit ``sqlite:`` URI) keeps its artifacts in
    ``<workdir>/mlartifacts``; a server chooses its own artifact root.

    Args:
        workdir: the run's work folder (holds ``mlflow.db`` and ``mlartifacts/`` by default).
        tracking_uri: explicit tracking URI; wins over the environment.
        experiment: experiment name.

    Returns:
        The resolved config.
    """
    uri = tracking_uri or settings.mlflow_tracking_uri()
    local_artifacts = (Path(workdir).resolve() / ARTIFACTS_DIRNAME).as_uri()
    if uri is None:
        uri = f"sqlite:///{Path(workdir).resolve() / DB_FILENAME}"
    artifact_location = local_artifacts if urlparse(uri).scheme == "sqlite" else None
    return TrackingConfig(
        tracking_uri=uri, artifact_location=artifact_location, experiment=experiment
    )


@lru_cache(maxsize=16)
def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def mlflow_client(config: TrackingConfig) -> MlflowClient:
    """Return the MLflow client for ``config`` (one per tracking URI and process).

    Creates the folder of a local SQLite database first, which MLflow does not do.
    """
    parsed = urlparse(config.tracking_uri)
    if parsed.scheme == "sqlite" and parsed.path not in ("", "/:memory:"):
        Path(parsed.path).parent.mkdir(parents=True, exist_ok=True)
    return _client(config.tracking_uri)


def ensure_experiment(config: TrackingConfig) -> str:
    """Return the experiment id of ``config.experiment``, creating it when missing.

    Raises:
        NotFoundError: when the experiment exists but was deleted (MLflow keeps its name).
    """
    client = mlflow_client(config)
    found = client.get_experiment_by_name(config.experiment)
    if found is None:
        try:
            return client.create_experiment(
                config.experiment, artifact_location=config.artifact_location
            )
        except MlflowException:
            # Another process created it between our lookup and our create.
            found = client.get_experiment_by_name(config.experiment)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        raise NotFoundError(
            f"MLflow experiment {config.experiment!r} at {config.tracking_uri} is deleted; "
            "restore it or choose another experiment name"
        )
    return found.experiment_id


def start_run(
    config: TrackingConfig, *, tags: Mapping[str, str], run_name: str | None = None
) -> str:
    """Create a run in the config's experiment and return its id."""
    experiment_id = ensure_experiment(config)
    run = mlflow_client(config).create_run(
        experiment_id, tags={k: str(v) for k, v in tags.items()}, run_name=run_name
    )
    return run.info.run_id


def run_exists(config: TrackingConfig, run_id: str) -> bool:
    """Whether the tracking store holds a live (not deleted) run with this id."""
    try:
        run = mlflow_client(config).get_run(run_id)
    except MlflowException:
        return False
    return run.info.lifecycle_stage != "deleted"


def reopen_run(config: TrackingConfig, run_id: str) -> None:
    """Mark a finished or failed run as running again (a resumed fit logs into the same run)."""
    mlflow_client(config).update_run(run_id, status="RUNNING")


def end_run(config: TrackingConfig, run_id: str, status: str = "FINISHED") -> None:
    """Mark a run as ended: ``FINISHED``, ``FAILED`` or ``KILLED``."""
    mlflow_client(config).set_terminated(run_id, status=status)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings into dotted keys and string values.

    ``{"a": {"b": 1}}`` becomes ``{"a.b": "1"}``.

    Sequences become comma-separated strings; values are cut to MLflow's length limit.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        flat[name] = text[:_MAX_PARAM_VALUE_LENGTH]
    return flat


def log_params(config: TrackingConfig, run_id: str, params: Mapping[str, Any]) -> None:
    """Log a (possibly nested) dict of params, flattened to dotted keys."""
    client = mlflow_client(config)
    items = [Param(k, v) for k, v in flatten_params(params).items()]
    for start in range(0, len(items), _MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=items[start : start + _MAX_BATCH_PARAMS])


def set_tags(config: TrackingConfig, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set (or overwrite) tags on a run."""
    mlflow_client(config).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_metrics(
    config: TrackingConfig, run_id: str, metrics: Mapping[str, float], *, step: int
) -> None:
    """Log several metrics at one step (timestamps: now)."""
    log_metric_rows(
        config, run_id, [{"name": k, "value": v, "step": step} for k, v in metrics.items()]
    )


def log_metric_rows(config: TrackingConfig, run_id: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Log metric rows ``{name, value, step}`` in batches (a replayed history, for instance)."""
    now = int(time.time() * 1000)
    items = [Metric(str(r["name"]), float(r["value"]), now, int(r["step"])) for r in rows]
    client = mlflow_client(config)
    for start in range(0, len(items), _MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=items[start : start + _MAX_BATCH_METRICS])


def log_folder(
    config: TrackingConfig,
    run_id: str,
    folder: Path,
    artifact_path: str,
    *,
    exclude: Iterable[str] = (),
) -> str:
    """Log the files of a folder (recursively) as the run's artifacts under ``artifact_path``.

    Args:
        config: tracking config.
        run_id: the run.
        folder: local folder to upload.
        artifact_path: destination inside the run's artifacts, e.g. ``checkpoints/step-000050``.
        exclude: file names (at any depth) to leave out.

    Returns:
        The artifacts' URI, ``runs:/<run_id>/<artifact_path>``.

    Raises:
        NotFoundError: when ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotFoundError(f"cannot log {root} as artifacts: not a folder")
    skip = set(exclude)
    client = mlflow_client(config)
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in skip:
            relative = path.parent.relative_to(root).as_posix()
            destination = artifact_path if relative == "." else f"{artifact_path}/{relative}"
            client.log_artifact(run_id, str(path), destination)
    return artifact_uri(run_id, artifact_path)


def log_file(config: TrackingConfig, run_id: str, path: Path, artifact_path: str) -> str:
    """Log one file as an artifact under ``artifact_path``; returns its ``runs:/`` URI.

    Raises:
        NotFoundError: when ``path`` is not a file.
    """
    if not Path(path).is_file():
        raise NotFoundError(f"cannot log {path} as an artifact: not a file")
    mlflow_client(config).log_artifact(run_id, str(path), artifact_path)
    return artifact_uri(run_id, f"{artifact_path}/{Path(path).name}")


def has_artifacts(config: TrackingConfig, run_id: str, artifact_path: str) -> bool:
    """Whether the run already holds artifacts under ``artifact_path``."""
    try:
        return bool(mlflow_client(config).list_artifacts(run_id, artifact_path))
    except (MlflowException, OSError):
        return False


def artifact_uri(run_id: str, artifact_path: str) -> str:
    """Return the ``runs:/`` URI of a run's artifact path."""
    return f"runs:/{run_id}/{artifact_path.strip('/')}"
