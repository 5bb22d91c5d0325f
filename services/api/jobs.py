"""Fine-tuning runs started from the API: validated configs, Ray jobs, and their status.

A run never executes inside a serving replica: ``POST /train`` submits
``serlens train --config ... --workdir ...`` as a Ray job through the cluster's job service
(the dashboard), and ``GET /train/{id}`` reads the job's state and logs back, and the
checkpoints and metrics it wrote from the feature store.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from serlens.api.config import ApiConfig
from serlens.pipeline.config import load_study_args
from serlens.shared.errors import InvalidRequestError, JobBackendError, NotFoundError
from serlens.shared.keys import config_hash
from serlens.shared.schema import CHECKPOINTS, TRAIN_METRICS
from serlens.shared.store import FeatureStore

#: ``metadata["serlens"]`` of every job the API submits (other jobs are not shown).
JOB_KIND = "train"

_TRAIN_KEY = re.compile(r"train key ([0-9a-zA-Z_-]+)")
_MLFLOW_RUN = re.compile(r"MLflow run ([0-9a-zA-Z_-]+)")


class TrainRequest(BaseModel):
    """The body of ``POST /train``."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] | str = Field(
        description="a run config (the sections of deploy/demo.yaml) as an object, "
        "or the path of a YAML file inside the API's workdir"
    )
    overrides: list[str] = Field(
        default_factory=list, description="`--set` overrides, e.g. ['train.max_steps=4']"
    )


def prepare_config(request: TrainRequest, config: ApiConfig) -> Path:
    """Validate a posted run config and write it, resolved, where the job will read it.

    Args:
        request: the posted body.
        config: the API's settings (the workdir).

    Returns:
        ``<workdir>/train-requests/<hash>.yaml``.

    Raises:
        InvalidRequestError: a path outside the workdir.
        NotFoundError: a path to no file.
        InvalidConfigError: a config that does not validate (every problem named).
    """
    workdir = config.workdir
    if isinstance(request.config, str):
        source = (workdir / request.config).resolve()
        if not source.is_relative_to(workdir):
            raise InvalidRequestError(
                f"config: {request.config!r} is outside the workdir {workdir}"
            )
        if not source.is_file():
            raise NotFoundError(f"config: no file {source}")
        args = load_study_args(source, request.overrides)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "config.yaml"
            source.write_text(yaml.safe_dump(request.config, sort_keys=False))
            args = load_study_args(source, request.overrides)
    text = args.to_yaml()
    path = config.paths.train_requests / f"{config_hash('train-request', text)}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def serlens_command() -> str:
    """The ``serlens`` script of this Python environment (the job runs in the same one)."""
    beside = Path(sys.executable).with_name("serlens")
    return str(beside) if beside.exists() else (shutil.which("serlens") or "serlens")


class TrainJobs:
    """Submits and inspects fine-tuning jobs on the Ray cluster this process belongs to.

    Args:
        config: the API's settings.
        store: the feature store the jobs write to.
    """

    def __init__(self, config: ApiConfig, store: FeatureStore) -> None:
        self.config = config
        self.store = store
        self._client: Any = None

    def client(self) -> Any:
        """A ``JobSubmissionClient`` for the running cluster's dashboard (made on first use).

        Raises:
            JobBackendError: no job service (Ray started without its dashboard, or unreachable).
        """
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient()
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise JobBackendError(f"the Ray job service is not reachable: {err}") from err
        return self._client

    def submit(self, config_path: Path) -> dict[str, str]:
        """Start ``serlens train`` on ``config_path`` as a Ray job.

        Returns:
            ``job_id``, ``entrypoint`` and ``config_path``.

        Raises:
            JobBackendError: the job service refused the submission.
        """
        job_id = f"serlens-train-{uuid.uuid4().hex[:12]}"
        entrypoint = " ".join(
            shlex.quote(part)
            for part in (
                serlens_command(),
                "train",
                "--config",
                str(config_path),
                "--workdir",
                str(self.config.workdir),
                "--quiet",
            )
        )
        try:
            self.client().submit_job(
                entrypoint=entrypoint,
                submission_id=job_id,
                metadata={"serlens": JOB_KIND, "config": str(config_path)},
            )
        except (ConnectionError, RuntimeError) as err:
            raise JobBackendError(f"the Ray job service refused the job: {err}") from err
        return {"job_id": job_id, "entrypoint": entrypoint, "config_path": str(config_path)}

    def status(self, job_id: str, *, tail_lines: int = 50) -> dict[str, Any]:
        """State, log tail, and what the run wrote to the store so far.

        The run is found by the train key that ``serlens train`` prints; before it prints
        it, by the checkpoints written since the job started.

        Raises:
            NotFoundError: no job with that id was submitted by the API.
            JobBackendError: the job service cannot be reached.
        """
        try:
            info = self.client().get_job_info(job_id)
        except RuntimeError as err:
            if "404" in str(err) or "does not exist" in str(err):
                raise NotFoundError(f"no training job {job_id!r}") from err
            raise JobBackendError(f"the Ray job service failed: {err}") from err
        except ConnectionError as err:
            raise JobBackendError(f"the Ray job service is not reachable: {err}") from err
        if (info.metadata or {}).get("serlens") != JOB_KIND:
            raise NotFoundError(f"no training job {job_id!r}")
        try:
            logs = self.client().get_job_logs(job_id)
        except (ConnectionError, RuntimeError):
            logs = ""
        train_key = _last_match(_TRAIN_KEY, logs) or self._train_key_since(info.start_time)
        checkpoints = self._rows(CHECKPOINTS.name, train_key, ["checkpoint_step"])
        metrics = self._rows(TRAIN_METRICS.name, train_key, ["step", "name"])
        run_id = _last_match(_MLFLOW_RUN, logs) or next(
            (r["run_id"] for r in checkpoints if r["run_id"]), None
        )
        return {
            "job_id": job_id,
            "state": str(getattr(info.status, "value", info.status)),
            "message": info.message,
            "start_time": _iso(info.start_time),
            "end_time": _iso(info.end_time),
            "entrypoint": info.entrypoint,
            "logs_tail": logs.splitlines()[-tail_lines:] if tail_lines > 0 else [],
            "train_key": train_key,
            "mlflow_run_id": run_id,
            "checkpoints": checkpoints,
            "metrics": [{k: m[k] for k in ("step", "epoch", "name", "value")} for m in metrics],
        }

    def _train_key_since(self, start_ms: int | None) -> str | None:
        if not start_ms:
            return None
        since = dt.datetime.fromtimestamp(start_ms / 1000, dt.UTC)
        rows = self.store.read(
            CHECKPOINTS.name,
            columns=["train_key", "created_at"],
            created_since=since,
            order_by=["created_at"],
        ).to_pylist()
        return rows[-1]["train_key"] if rows else None

    def _rows(self, name: str, train_key: str | None, order_by: list[str]) -> list[dict[str, Any]]:
        if not train_key:
            return []
        return self.store.read(
            name, filters={"train_key": train_key}, order_by=order_by
        ).to_pylist()


def _last_match(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.findall(text)
    return found[-1] if found else None


def _iso(epoch_ms: int | None) -> str | None:
    return (
        dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC).isoformat()
        if epoch_ms
        else None
    )
