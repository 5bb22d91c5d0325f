"""Fine-tuning runs started from the API as Ray jobs: admission, ownership, status.

A run never executes inside a serving replica: ``POST /train`` submits
``serlens train --config ... --workdir ...`` as a Ray job through the cluster's job service,
with entrypoint resources that only worker nodes offer (never the head). Admission holds
across ingress replicas because it is decided from the job service's own list: at most
``max_train_jobs`` active jobs, and one per request key (the same resolved config, so the same
train key); a submission that raced past the check stops itself, the earliest wins. A job is
visible only to the token name that submitted it.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from serlens.api.config import ApiConfig
from serlens.shared.errors import ConflictError, JobBackendError, NotFoundError, TooManyJobsError
from serlens.shared.schema import CHECKPOINTS, TRAIN_METRICS
from serlens.shared.store import FeatureStore

#: ``metadata["serlens"]`` of every job the API submits (other jobs are not shown).
JOB_KIND = "train"

_TRAIN_KEY = re.compile(r"train key ([0-9a-zA-Z_-]+)")
_MLFLOW_RUN = re.compile(r"MLflow run ([0-9a-zA-Z_-]+)")

#: Job states that hold a slot.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING"})


def serlens_command() -> str:
    """The ``serlens`` script of this Python environment (the job runs in the same one)."""
    beside = Path(sys.executable).with_name("serlens")
    return str(beside) if beside.exists() else (shutil.which("serlens") or "serlens")


def _state(job: Any) -> str:
    return str(getattr(job.status, "value", job.status))


#: How long a submission waits for a node's job agent that is still starting, in seconds.
AGENT_WAIT_S = 30.0

class TrainJobs:
    """Submits and inspects fine-tuning jobs on the Ray cluster this process belongs to.

    Args:
        config: the API's settings (limits, driver resources, workdir).
        store: the feature store the jobs write to.
    """

    def __init__(self, config: ApiConfig, store: FeatureStore) -> None:
        self.config = config
        self.store = store
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """A ``JobSubmissionClient`` for the running cluster's dashboard (made on first use).

        Raises:
            JobBackendError: no job service (Ray started without its dashboard, or unreachable).
        """
        if self._client is None:
            import ray
            from ray.job_submission import JobSubmissionClient

            # The job service of the cluster this replica runs in (found through its GCS), not
            # whichever Ray instance auto-detection finds first on a shared machine.
            address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
            try:
                self._client = JobSubmissionClient(address)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise JobBackendError(f"the Ray job service is not reachable: {err}") from err
        return self._client

    def active(self) -> list[Any]:
        """The API's pending and running jobs, oldest first (ties broken by id).

        Raises:
            JobBackendError: the job service cannot be reached.
        """
        try:
            jobs = self.client().list_jobs()
        except (ConnectionError, RuntimeError) as err:
            raise JobBackendError(f"the Ray job service is not reachable: {err}") from err
        mine = [j for j in jobs if (j.metadata or {}).get("serlens") == JOB_KIND and _state(j) in ACTIVE_STATES]
        return sorted(mine, key=lambda j: (j.start_time or 0, j.submission_id or ""))

    def submit(self, config_path: Path, *, request_key: str, owner: str, dataset: str) -> dict[str, Any]:
        """Start ``serlens train`` on ``config_path`` as a Ray job, or join the same running one.

        Args:
            config_path: the resolved run config.
            request_key: hash of the resolved config (one active job per key).
            owner: the caller's token name.
            dataset: the dataset name, for listings.

        Returns:
            ``job_id``, ``joined`` (True when the same owner's identical job was running),
            ``dataset`` and ``request_key``.

        Raises:
            TooManyJobsError: ``max_train_jobs`` jobs are active (429).
            ConflictError: another caller's identical job is running (409).
            JobBackendError: the job service refused the submission.
        """
        with self._lock:  # one replica's own submissions in order; other replicas settle below
            active = self.active()
            same = [j for j in active if j.metadata.get("request_key") == request_key]
            if same:
                return self._join(same[0], owner)
            if len(active) >= self.config.max_train_jobs:
                raise self._too_many(active)
            job_id = f"serlens-train-{uuid.uuid4().hex[:12]}"
            self._submit(job_id, config_path, request_key=request_key, owner=owner, dataset=dataset)
            return self._settle(job_id, request_key, owner)

    def _submit(self, job_id: str, config_path: Path, **metadata: str) -> None:
        command = (serlens_command(), "train", "--config", str(config_path),
                   "--workdir", str(self.config.workdir), "--quiet")
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                self.client().submit_job(
                    entrypoint=" ".join(shlex.quote(part) for part in command),
                    submission_id=job_id,
                    metadata={"serlens": JOB_KIND, "config": str(config_path), **metadata},
                    entrypoint_num_cpus=self.config.train_driver_num_cpus,
                    entrypoint_resources=self.config.train_driver_resources or None,
                )
                return
            except (ConnectionError, RuntimeError, ValueError) as err:
                # A node's job agent starts after the node: "try again later" is retried, briefly.
                if "No available agent" in str(err) and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                raise JobBackendError(f"the Ray job service refused the job: {err}") from err

    def _settle(self, job_id: str, request_key: str, owner: str) -> dict[str, Any]:
        # Another ingress replica may have admitted a job at the same time: every replica
        # orders the active jobs the same way, and the later submission gives way.
        active = self.active()
        ids = [j.submission_id for j in active]
        same = [j for j in active if j.metadata.get("request_key") == request_key]
        if same and same[0].submission_id != job_id:
            self._stop(job_id)
            return self._join(same[0], owner)
        if job_id in ids and ids.index(job_id) >= self.config.max_train_jobs:
            self._stop(job_id)
            raise self._too_many(active)
        mine = next((j for j in active if j.submission_id == job_id), None)
        dataset = mine.metadata.get("dataset") if mine else None
        return {"job_id": job_id, "joined": False, "dataset": dataset, "request_key": request_key}

    def _stop(self, job_id: str) -> None:
        try:
            self.client().stop_job(job_id)
        except (ConnectionError, RuntimeError) as err:
            raise JobBackendError(f"the Ray job service failed to stop {job_id}: {err}") from err

    @staticmethod
    def _join(job: Any, owner: str) -> dict[str, Any]:
        if job.metadata.get("owner") != owner:
            raise ConflictError("an identical fine-tuning run (same dataset and hyper-parameters) "
                                "is running for another caller; try again when it has finished")
        return {"job_id": job.submission_id, "joined": True, "dataset": job.metadata.get("dataset"),
                "request_key": job.metadata.get("request_key")}

    def _too_many(self, active: list[Any]) -> TooManyJobsError:
        return TooManyJobsError(f"{len(active)} training jobs are running or pending, the limit is "
                                f"{self.config.max_train_jobs}; try again when one has finished")

    def owned(self, owner: str) -> list[dict[str, Any]]:
        """The jobs ``owner`` submitted: id, state, dataset, start time."""
        try:
            jobs = self.client().list_jobs()
        except (ConnectionError, RuntimeError) as err:
            raise JobBackendError(f"the Ray job service is not reachable: {err}") from err
        return [
            {"job_id": j.submission_id, "state": _state(j), "dataset": j.metadata.get("dataset"),
             "start_time": _iso(j.start_time)}
            for j in jobs
            if (j.metadata or {}).get("serlens") == JOB_KIND and j.metadata.get("owner") == owner
        ]

    def status(self, job_id: str, *, owner: str, tail_lines: int = 50) -> dict[str, Any]:
        """State, log tail, and what the run wrote to the store so far.

        The run is found by the train key that ``serlens train`` prints; before it prints
        it, by the checkpoints written since the job started.

        Raises:
            NotFoundError: no job with that id was submitted through the API by ``owner``.
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
        metadata = info.metadata or {}
        if metadata.get("serlens") != JOB_KIND or metadata.get("owner") != owner:
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
            "state": _state(info),
            "dataset": metadata.get("dataset"),
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
