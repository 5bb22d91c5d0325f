"""MLflow tracking: where runs go, and the few calls serlens makes, each with bounded retries.

This is the one module that resolves the tracking URI (``MLFLOW_TRACKING_URI`` itself is
read by ``serlens.shared.settings``, the one place that reads environment variables). Everything
goes through an explicit ``MlflowClient`` bound to a ``TrackingConfig`` (never the fluent
API's global state), so that several services, threads or Ray workers can log to
different stores in one process.

Without a server, runs go to a SQLite file in the work folder and artifacts to a folder
next to it::

    <workdir>/mlflow.db        runs, params, metrics, tags
    <workdir>/mlartifacts/     artifacts (checkpoints, figures), one folder per run

Failing safely: a database store is created (tables, migrations) by one process at a time,
under a file lock, so that many processes opening a fresh store at once all succeed. Every
call is retried a bounded number of times (``TrackingConfig.retry_attempts``, with MLflow's
own HTTP retries turned down to one try each by default), then raises ``TrackingError``;
``serlens.shared.run_logger`` keeps such calls off a training loop's critical path.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from serlens.shared import settings
from serlens.shared.errors import NotFoundError, TrackingError

log = logging.getLogger(__name__)

DB_FILENAME = "mlflow.db"
ARTIFACTS_DIRNAME = "mlartifacts"

# MLflow's limits (mlflow.utils.validation): longer values are refused by the server.
_MAX_PARAM_VALUE_LENGTH = 6000
_MAX_BATCH_PARAMS = 100
_MAX_BATCH_METRICS = 1000
# Error codes that no retry can fix (the request itself is wrong, or the thing is gone).
_PERMANENT_ERRORS = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_STATE",
    "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED", "ENDPOINT_NOT_FOUND",
})
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

T = TypeVar("T")


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow runs and their artifacts go, and how hard to try.

    Attributes:
        tracking_uri: the MLflow tracking URI (``sqlite:///...``, ``http://...``, ``file:...``).
        artifact_location: the artifact root of a newly created experiment (a URI), or None
            to let the tracking server choose.
        experiment: the experiment every run of this config belongs to.
        retry_attempts: tries per call before it raises ``TrackingError`` (>= 1).
        retry_backoff_s: wait before the second try, in seconds; doubled for each later one.
        request_timeout_s: HTTP timeout of one request to a tracking server, in seconds.
        catchup_timeout_s: how long the end of a fit waits for a background logger to catch
            up with a tracking server that went away, in seconds.
        registered_model: the Model Registry name a fit's best checkpoint is registered under
            (None: register nothing).
        model_alias: the alias pointed at that version (``serlens-ser@champion``).
    """

    tracking_uri: str
    artifact_location: str | None
    experiment: str = "serlens"
    retry_attempts: int = 3
    retry_backoff_s: float = 0.5
    request_timeout_s: float = 30.0
    catchup_timeout_s: float = 120.0
    registered_model: str | None = "serlens-ser"
    model_alias: str = "champion"


def tracking_config(
    workdir: Path, *, tracking_uri: str | None = None, experiment: str = "serlens",
    registered_model: str | None = "serlens-ser", model_alias: str = "champion",
) -> TrackingConfig:
    """Resolve where to track: explicit URI, else ``MLFLOW_TRACKING_URI``, else local SQLite.

    A SQLite store (the default, or an explicit ``sqlite:`` URI) keeps its artifacts in
    ``<workdir>/mlartifacts``; a server chooses its own artifact root.

    Args:
        workdir: the run's work folder (holds ``mlflow.db`` and ``mlartifacts/`` by default).
        tracking_uri: explicit tracking URI; wins over the environment.
        experiment: experiment name.
        registered_model: where a fit's best checkpoint is registered (None: nowhere).
        model_alias: the alias of that version.

    Returns:
        The resolved config.
    """
    uri = tracking_uri or settings.mlflow_tracking_uri()
    local_artifacts = (Path(workdir).resolve() / ARTIFACTS_DIRNAME).as_uri()
    if uri is None:
        uri = f"sqlite:///{Path(workdir).resolve() / DB_FILENAME}"
    artifact_location = local_artifacts if urlparse(uri).scheme == "sqlite" else None
    return TrackingConfig(
        tracking_uri=uri, artifact_location=artifact_location, experiment=experiment,
        registered_model=registered_model, model_alias=model_alias,
    )


def _init_lock_path(tracking_uri: str) -> Path | None:
    """The lock file that serialises creating a database store (None for servers and files)."""
    parsed = urlparse(tracking_uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme == "sqlite" and parsed.path not in ("", "/:memory:"):
        # SQLAlchemy's sqlite:///relative.db and sqlite:////absolute.db: drop one slash.
        return Path(f"{parsed.path[1:]}.init.lock")
    if scheme in _DATABASE_SCHEMES:
        digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"serlens-mlflow-{digest}.init.lock"
    return None


@lru_cache(maxsize=16)
def _client(tracking_uri: str, request_timeout_s: float) -> MlflowClient:
    if urlparse(tracking_uri).scheme in ("http", "https"):
        # MLflow reads these at every request; its defaults (7 retries, 120 s) let one call
        # hang for minutes. Ours retry instead, boundedly. A value the user set is kept.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(request_timeout_s)))
    lock_path = _init_lock_path(tracking_uri)
    if lock_path is None:
        return MlflowClient(tracking_uri=tracking_uri)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        # MLflow creates the tables and runs its migrations when a client first touches a
        # store; two processes doing that at once can break the schema for good. One at a
        # time, then each just checks it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=tracking_uri)
            client.search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def mlflow_client(config: TrackingConfig) -> MlflowClient:
    """Return the MLflow client for ``config`` (one per tracking URI and process).

    The first call in a process initialises a database store under a file lock.

    Raises:
        TrackingError: when the store cannot be opened.
    """
    try:
        return _client(config.tracking_uri, config.request_timeout_s)
    except (MlflowException, OSError) as err:
        raise TrackingError(f"cannot open the MLflow store at {config.tracking_uri}: {err}") from err


def is_permanent(err: BaseException) -> bool:
    """Whether an MLflow error is one that no retry can fix."""
    return isinstance(err, MlflowException) and err.error_code in _PERMANENT_ERRORS


def call(config: TrackingConfig, what: str, fn: Callable[[MlflowClient], T]) -> T:
    """Run ``fn(client)``, retrying transient failures ``config.retry_attempts`` times in all.

    Args:
        config: tracking config (the client and the retry policy).
        what: what the call does, for the error message.
        fn: the call.

    Raises:
        TrackingError: after the last try, or at once for an error no retry can fix; it names
            the store and chains the original error.
    """
    for attempt in range(1, config.retry_attempts + 1):
        try:
            return fn(mlflow_client(config))
        except (MlflowException, OSError, TrackingError) as err:
            if attempt == config.retry_attempts or is_permanent(err):
                raise TrackingError(f"MLflow at {config.tracking_uri}: cannot {what} "
                                    f"(try {attempt} of {config.retry_attempts}): {err}") from err
            log.info("MLflow at %s: %s failed (%s); retrying", config.tracking_uri, what, err)
            time.sleep(config.retry_backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable: retry_attempts >= 1")


def ensure_experiment(config: TrackingConfig) -> str:
    """Return the experiment id of ``config.experiment``, creating it when missing.

    Raises:
        NotFoundError: when the experiment exists but was deleted (MLflow keeps its name).
        TrackingError: when the store cannot be reached.
    """
    found = call(config, "look up the experiment", lambda c: c.get_experiment_by_name(config.experiment))
    if found is None:
        try:
            return mlflow_client(config).create_experiment(config.experiment,
                                                           artifact_location=config.artifact_location)
        except MlflowException:
            # Another process created it between our lookup and our create.
            found = call(config, "look up the experiment", lambda c: c.get_experiment_by_name(config.experiment))
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
    run = call(config, "create a run", lambda c: c.create_run(
        experiment_id, tags={k: str(v) for k, v in tags.items()}, run_name=run_name))
    return run.info.run_id


def run_name(*, model: str, dataset: str | None, lr: float, key: str) -> str:
    """A run name people can read: ``wavlm-base-plus · crema-d · lr 5e-5 · 3f2a`` (the key's start).

    Args:
        model: hub id, folder, ``serlens:`` name or ``models:/`` URI; its last part is shown.
        dataset: the dataset's name (left out when None).
        lr: the learning rate.
        key: the config hash (kept whole as a tag; its first four characters tell runs apart).
    """
    short = (model.removeprefix("models:/") if model.startswith("models:/")
             else model.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1])  # serlens:tiny-random-wavlm too
    mantissa, _, exponent = f"{lr:g}".partition("e")
    rate = f"{mantissa}e{int(exponent)}" if exponent else mantissa
    return " · ".join(part for part in (short, dataset, f"lr {rate}", key[:4]) if part)


def run_exists(config: TrackingConfig, run_id: str) -> bool:
    """Whether the tracking store holds a live (not deleted) run with this id.

    Raises:
        TrackingError: when the store cannot say (unreachable), which is not "gone".
    """
    try:
        run = call(config, f"look up run {run_id}", lambda c: c.get_run(run_id))
    except TrackingError as err:
        cause = err.__cause__
        if isinstance(cause, MlflowException) and cause.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return run.info.lifecycle_stage != "deleted"


def reopen_run(config: TrackingConfig, run_id: str) -> None:
    """Mark a finished or failed run as running again (a resumed fit logs into the same run)."""
    call(config, f"reopen run {run_id}", lambda c: c.update_run(run_id, status="RUNNING"))


def end_run(config: TrackingConfig, run_id: str, status: str = "FINISHED") -> None:
    """Mark a run as ended: ``FINISHED``, ``FAILED`` or ``KILLED``."""
    call(config, f"end run {run_id}", lambda c: c.set_terminated(run_id, status=status))


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


def _log_batch(client: MlflowClient, *, run_id: str, **batch: Any) -> None:
    client.log_batch(run_id, **batch)


def log_params(config: TrackingConfig, run_id: str, params: Mapping[str, Any]) -> None:
    """Log a (possibly nested) dict of params, flattened to dotted keys."""
    items = [Param(k, v) for k, v in flatten_params(params).items()]
    for start in range(0, len(items), _MAX_BATCH_PARAMS):
        chunk = items[start : start + _MAX_BATCH_PARAMS]
        call(config, "log params", partial(_log_batch, run_id=run_id, params=chunk))


def set_tags(config: TrackingConfig, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set (or overwrite) tags on a run."""
    items = [RunTag(k, str(v)[:_MAX_PARAM_VALUE_LENGTH]) for k, v in tags.items()]
    call(config, "set tags", lambda c: c.log_batch(run_id, tags=items))


def log_metrics(
    config: TrackingConfig, run_id: str, metrics: Mapping[str, float], *, step: int
) -> None:
    """Log several metrics at one step (timestamps: now)."""
    log_metric_rows(
        config, run_id, [{"name": k, "value": v, "step": step} for k, v in metrics.items()]
    )


def log_metric_rows(config: TrackingConfig, run_id: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Log metric rows ``{name, value, step[, timestamp_ms]}`` in batches.

    A row that carries its own ``timestamp_ms`` is logged with it, so logging the same rows
    again (a replayed history, a retry after a lost reply) adds nothing: MLflow keeps one
    entry per (name, step, timestamp, value).
    """
    now = int(time.time() * 1000)
    items = [Metric(str(r["name"]), float(r["value"]), int(r.get("timestamp_ms", now)), int(r["step"]))
             for r in rows]
    for start in range(0, len(items), _MAX_BATCH_METRICS):
        chunk = items[start : start + _MAX_BATCH_METRICS]
        call(config, "log metrics", partial(_log_batch, run_id=run_id, metrics=chunk))


def log_file(config: TrackingConfig, run_id: str, path: Path, artifact_path: str) -> str:
    """Log one file as an artifact under ``artifact_path``; returns its ``runs:/`` URI.

    Raises:
        NotFoundError: when ``path`` is not a file.
    """
    if not Path(path).is_file():
        raise NotFoundError(f"cannot log {path} as an artifact: not a file")
    call(config, f"upload {path}", lambda c: c.log_artifact(run_id, str(path), artifact_path))
    return artifact_uri(run_id, f"{artifact_path}/{Path(path).name}")


def has_artifacts(config: TrackingConfig, run_id: str, artifact_path: str) -> bool:
    """Whether the run already holds artifacts under ``artifact_path``."""
    return bool(call(config, f"list {artifact_path}", lambda c: c.list_artifacts(run_id, artifact_path)))


def artifact_uri(run_id: str, artifact_path: str) -> str:
    """Return the ``runs:/`` URI of a run's artifact path."""
    return f"runs:/{run_id}/{artifact_path.strip('/')}"
