"""Fine-tuning runs started from the API: admission, ownership, status.

A run never executes inside a serving replica: ``POST /train`` asks the cluster's ledger
(``serlens.api.job_registry``, a detached Ray actor reached over the replica's own Ray
connection, not the dashboard's job API) to start ``serlens train --config ... --workdir ...``
as a Ray task with driver resources that only worker nodes offer (never the head). The ledger
decides admission for every ingress replica at once: at most ``max_train_jobs`` active runs,
and one per request key (the same resolved config, so the same train key). A run is visible
only to the token name that started it.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from serlens.api.config import ApiConfig
from serlens.shared.errors import ConflictError, JobBackendError, NotFoundError, TooManyJobsError
from serlens.shared.schema import CHECKPOINTS, TRAIN_METRICS
from serlens.shared.store import FeatureStore

#: ``metadata["serlens"]`` of every run the API starts.
JOB_KIND = "train"

#: The ``train_metrics`` columns a job's status shows of each point of its curves.
METRIC_COLUMNS = ("step", "epoch", "name", "value")

_TRAIN_KEY = re.compile(r"train key ([0-9a-zA-Z_-]+)")
_MLFLOW_RUN = re.compile(r"MLflow run ([0-9a-zA-Z_-]+)")


def serlens_command() -> str:
    """The ``serlens`` script of this Python environment (the run uses the same one)."""
    beside = Path(sys.executable).with_name("serlens")
    return str(beside) if beside.exists() else (shutil.which("serlens") or "serlens")


class TrainJobs:
    """Starts and inspects fine-tuning runs on the Ray cluster this process belongs to.

    Args:
        config: the API's settings (limits, driver resources, workdir).
        store: the feature store the runs write to.
    """

    def __init__(self, config: ApiConfig, store: FeatureStore) -> None:
        self.config = config
        self.store = store
        self._ledger: Any = None
        self._lock = threading.Lock()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the ledger actor (found or made on first use, and found again once if it died).

        Raises:
            JobBackendError: Ray is not running here, or the ledger does not answer.
        """
        import ray

        if not ray.is_initialized():
            raise JobBackendError("training needs the Ray cluster, and this process is not connected to one")
        try:
            try:
                return ray.get(getattr(self._handle(), method).remote(*args, **kwargs), timeout=60)
            except ray.exceptions.RayActorError:
                self._ledger = None  # it died and was replaced (or restarted): look it up again
                return ray.get(getattr(self._handle(), method).remote(*args, **kwargs), timeout=60)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
            raise JobBackendError(f"the training ledger does not answer: {err}") from err

    def _handle(self) -> Any:
        from serlens.api.job_registry import registry

        with self._lock:
            if self._ledger is None:
                self._ledger = registry()
            return self._ledger

    def active(self) -> list[dict[str, Any]]:
        """The pending and running runs of every caller, oldest first.

        Raises:
            JobBackendError: the ledger cannot be reached.
        """
        return list(self._call("active"))

    def submit(self, config_path: Path, *, request_key: str, owner: str, dataset: str) -> dict[str, Any]:
        """Start ``serlens train`` on ``config_path``, or join the same owner's identical run.

        Args:
            config_path: the resolved run config.
            request_key: hash of the resolved config (one active run per key).
            owner: the caller's token name.
            dataset: the dataset name, for listings.

        Returns:
            ``job_id``, ``joined`` (True when the same owner's identical run was active),
            ``dataset`` and ``request_key``.

        Raises:
            TooManyJobsError: ``max_train_jobs`` runs are active (429).
            ConflictError: another caller's identical run is active (409).
            JobBackendError: the ledger cannot be reached.
        """
        job_id = f"serlens-train-{uuid.uuid4().hex[:12]}"
        command = [serlens_command(), "train", "--config", str(config_path),
                   "--workdir", str(self.config.workdir), "--quiet"]
        metadata = {"serlens": JOB_KIND, "config": str(config_path), "request_key": request_key,
                    "owner": owner, "dataset": dataset}
        answer = self._call("admit", job_id, command, limit=self.config.max_train_jobs,
                            num_cpus=self.config.train_driver_num_cpus,
                            resources=self.config.train_driver_resources, metadata=metadata)
        if answer["outcome"] == "full":
            raise TooManyJobsError(f"{answer['active']} training jobs are running or pending, the limit is "
                                   f"{self.config.max_train_jobs}; try again when one has finished")
        job = answer["job"]
        if answer["outcome"] == "same" and job["metadata"].get("owner") != owner:
            raise ConflictError("an identical fine-tuning run (same dataset and hyper-parameters) "
                                "is running for another caller; try again when it has finished")
        return {"job_id": job["job_id"], "joined": answer["outcome"] == "same",
                "dataset": job["metadata"].get("dataset"), "request_key": request_key}

    def stop(self, job_id: str, *, owner: str) -> bool:
        """Stop one of ``owner``'s active runs; False when it had already finished.

        Raises:
            NotFoundError: no run with that id was started by ``owner``.
            JobBackendError: the ledger cannot be reached.
        """
        self._owned_record(job_id, owner)
        return bool(self._call("stop", job_id))

    def _owned_record(self, job_id: str, owner: str) -> dict[str, Any]:
        record = self._call("get", job_id)
        if record is None or record["metadata"].get("owner") != owner:
            raise NotFoundError(f"no training job {job_id!r}")
        return dict(record)

    def owned(self, owner: str) -> list[dict[str, Any]]:
        """The runs ``owner`` started: id, state, dataset, start time."""
        return [
            {"job_id": j["job_id"], "state": j["state"], "dataset": j["metadata"].get("dataset"),
             "start_time": _iso(j["start_time"])}
            for j in self._call("jobs", owner)
        ]

    def status(self, job_id: str, *, owner: str, tail_lines: int = 50) -> dict[str, Any]:
        """State, output tail, and what the run wrote to the store so far.

        The run is found by the train key that ``serlens train`` prints; before it prints
        it, by the checkpoints written since the run started.

        Raises:
            NotFoundError: no run with that id was started through the API by ``owner``.
            JobBackendError: the ledger cannot be reached.
        """
        record = self._owned_record(job_id, owner)
        logs = "\n".join(record["logs"])
        train_key = _last_match(_TRAIN_KEY, logs) or self._train_key_since(record["start_time"])
        checkpoints = self._rows(CHECKPOINTS.name, train_key, ["checkpoint_step"])
        metrics = self._rows(TRAIN_METRICS.name, train_key, ["step", "name"])
        run_id = _last_match(_MLFLOW_RUN, logs) or next(
            (r["run_id"] for r in checkpoints if r["run_id"]), None
        )
        return {
            "job_id": job_id,
            "state": record["state"],
            "dataset": record["metadata"].get("dataset"),
            "message": record["message"],
            "start_time": _iso(record["start_time"]),
            "end_time": _iso(record["end_time"]),
            "entrypoint": record["entrypoint"],
            "logs_tail": record["logs"][-tail_lines:] if tail_lines > 0 else [],
            "train_key": train_key,
            "mlflow_run_id": run_id,
            "checkpoints": checkpoints,
            "metrics": [{k: m[k] for k in METRIC_COLUMNS} for m in metrics],
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
