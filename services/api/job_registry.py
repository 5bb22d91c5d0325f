"""The cluster's one ledger of API training runs, and the Ray task that runs one fit.

``POST /train`` needs no job service: every ingress replica asks one detached, named Ray actor
(``TrainJobRegistry``) over its own Ray connection, so nothing inside the cluster has to reach
the dashboard's job API (port 8265, which the NetworkPolicies leave to the KubeRay operator).
The actor handles one call at a time, so admission (at most N active runs, one per request key)
is decided in one place for every replica, without races. Each admitted run is a Ray task
(``run_fit``) with the driver resources that only worker nodes offer, never the head; it runs
``serlens train`` as a child process and streams its output back to the ledger.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import ray

#: The ledger's actor name and namespace (one per Ray cluster, whichever replica made it).
REGISTRY_NAME = "serlens-train-jobs"
REGISTRY_NAMESPACE = "serlens"

#: Where a run stands, as Ray's job states name them.
JobState = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]

#: States that hold a slot.
ACTIVE_STATES: frozenset[JobState] = frozenset({"PENDING", "RUNNING"})

#: Output lines kept per run; finished runs kept in the ledger (oldest dropped first).
LOG_LINES = 5000
KEEP_FINISHED = 1000

#: prctl's option that asks for a signal when the parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

#: How long a stopped fit's process gets to exit before it is killed, in seconds.
STOP_GRACE_S = 20.0


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class JobRecord:
    """One run: who asked, what it runs, where it stands, and the tail of its output."""

    job_id: str
    entrypoint: str
    metadata: dict[str, str]
    start_time: int = field(default_factory=_now_ms)
    end_time: int | None = None
    state: JobState = "PENDING"
    message: str = ""
    logs: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))

    def public(self, *, with_logs: bool = False) -> dict[str, Any]:
        """The record as plain data (the log lines only when asked for)."""
        found = {"job_id": self.job_id, "entrypoint": self.entrypoint, "metadata": dict(self.metadata),
                 "start_time": self.start_time, "end_time": self.end_time, "state": self.state,
                 "message": self.message}
        return found | ({"logs": list(self.logs)} if with_logs else {})


class TrainJobRegistry:
    """The ledger (run as a detached Ray actor, one call at a time: see ``registry``)."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobRecord] = {}
        self._fits: dict[str, ray.ObjectRef] = {}

    def admit(self, job_id: str, command: list[str], *, limit: int, num_cpus: float,
              resources: dict[str, float], metadata: dict[str, str]) -> dict[str, Any]:
        """Start ``command`` as run ``job_id`` unless the same request or ``limit`` runs are active.

        Returns:
            ``outcome`` (``admitted``, ``same``: the identical request is active, ``full``),
            ``job`` (the admitted or the identical run) and ``active`` (runs holding a slot).
        """
        active = self.active()
        same = [job for job in active if job["metadata"].get("request_key") == metadata.get("request_key")]
        if same:
            return {"outcome": "same", "job": same[0], "active": len(active)}
        if len(active) >= limit:
            return {"outcome": "full", "job": None, "active": len(active)}
        record = JobRecord(job_id, " ".join(command), dict(metadata))
        self._jobs[job_id] = record
        self._fits[job_id] = run_fit.options(num_cpus=num_cpus, resources=resources or None, name=job_id).remote(
            command, job_id, ray.get_runtime_context().current_actor
        )
        self._forget_old()
        return {"outcome": "admitted", "job": record.public(), "active": len(active) + 1}

    def active(self) -> list[dict[str, Any]]:
        """Pending and running runs, oldest first."""
        self._settle()
        return [r.public() for r in self._jobs.values() if r.state in ACTIVE_STATES]

    def jobs(self, owner: str) -> list[dict[str, Any]]:
        """Every run ``owner`` started that the ledger still holds, oldest first."""
        self._settle()
        return [r.public() for r in self._jobs.values() if r.metadata.get("owner") == owner]

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One run with its output lines, or None."""
        self._settle()
        record = self._jobs.get(job_id)
        return record.public(with_logs=True) if record else None

    def stop(self, job_id: str) -> bool:
        """Stop an active run (its process gets ``STOP_GRACE_S`` to exit); False if none is active."""
        self._settle()
        record = self._jobs.get(job_id)
        if record is None or record.state not in ACTIVE_STATES:
            return False
        ray.cancel(self._fits[job_id])
        record.state, record.message = "STOPPED", "stopped through the API"
        record.end_time = _now_ms()
        return True

    def started(self, job_id: str) -> None:
        """Called by the run's task when it starts executing."""
        record = self._jobs.get(job_id)
        if record is not None and record.state == "PENDING":
            record.state = "RUNNING"

    def output(self, job_id: str, lines: list[str]) -> None:
        """Called by the run's task with new output lines."""
        record = self._jobs.get(job_id)
        if record is not None:
            record.logs.extend(lines)

    def _settle(self) -> None:
        """Record the outcome of every run whose task has returned."""
        if not self._fits:
            return
        done, _ = ray.wait(list(self._fits.values()), num_returns=len(self._fits), timeout=0)
        finished = {ref.hex() for ref in done}
        for job_id, ref in list(self._fits.items()):
            if ref.hex() not in finished:
                continue
            del self._fits[job_id]
            record = self._jobs[job_id]
            if record.state == "STOPPED":
                continue
            record.end_time = _now_ms()
            try:
                code = ray.get(ref)
            except ray.exceptions.RayError as err:
                record.state, record.message = "FAILED", str(err).strip().splitlines()[0][:500]
                continue
            record.state = "SUCCEEDED" if code == 0 else "FAILED"
            record.message = "serlens train finished" if code == 0 else f"serlens train exited with code {code}"

    def _forget_old(self) -> None:
        finished = [job_id for job_id, r in self._jobs.items() if r.state not in ACTIVE_STATES]
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job_id]


# num_cpus=0: it only books runs, so it fits on any node, the CPU-less head included.
_REGISTRY_ACTOR = ray.remote(num_cpus=0, max_restarts=-1)(TrainJobRegistry)


def registry() -> Any:
    """The cluster's ledger actor, created on first use (needs a connected Ray)."""
    # Detached: it outlives the replica that made it; get_if_exists: every replica shares one.
    return _REGISTRY_ACTOR.options(name=REGISTRY_NAME, namespace=REGISTRY_NAMESPACE, lifetime="detached",
                         get_if_exists=True).remote()


@ray.remote(max_retries=0)
def run_fit(command: list[str], job_id: str, ledger: Any) -> int:
    """Run ``command`` (``serlens train ...``) joined to this cluster; returns its exit code.

    Its output goes to the ledger line by line. A cancelled task stops the process (SIGTERM to
    its process group, SIGKILL after ``STOP_GRACE_S``).
    """
    ledger.started.remote(job_id)
    address = ray.get_runtime_context().gcs_address
    process = start_fit_process([*command, "--address", address])
    reader = threading.Thread(target=_forward, args=(process, job_id, ledger), daemon=True)
    reader.start()
    try:
        # A polling wait, not a blocking one, so that a cancellation interrupts it.
        while process.poll() is None:
            time.sleep(0.2)
        reader.join(timeout=5)
        return process.returncode
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def start_fit_process(command: list[str]) -> subprocess.Popen[str]:
    """Start a fit's process in its own process group, output piped, dying with this process.

    On Linux the child asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``):
    a Ray worker killed hard (node loss, OOM, a forced cancel, the cluster stopped) runs no
    ``finally``, and its fit would otherwise go on outside Ray's books, holding a driver
    connection to a cluster that may be gone. SIGKILL, not SIGTERM: a Ray driver's SIGTERM
    handler waits to disconnect from that cluster. Fits are crash-safe (the store's commit log,
    resumable checkpoints), so the next submission resumes it.
    """
    parent = os.getpid()
    # Looked up here, before the fork: the child only calls it (libc's symbols, already loaded).
    prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None

    def die_with_parent() -> None:  # runs in the child, between fork and exec
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=die_with_parent)


def _forward(process: subprocess.Popen[str], job_id: str, ledger: Any) -> None:
    """Send each line of the process's output to the ledger as it comes (fire and forget)."""
    if process.stdout is None:
        return
    for line in process.stdout:
        ledger.output.remote(job_id, [line.rstrip("\n")])
