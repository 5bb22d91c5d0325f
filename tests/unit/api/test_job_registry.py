"""The training ledger (serlens.api.job_registry) on a real local Ray, with real child processes.

Each run here is a small Python program in place of ``serlens train``: it prints a line (as
``serlens train`` prints its train key), then sleeps or exits with a given code.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from serlens.api.job_registry import REGISTRY_NAME, REGISTRY_NAMESPACE, registry

pytestmark = pytest.mark.slow

#: The program a run executes: print its pid and a train key, then sleep or exit (argv[1], argv[2]).
PROGRAM = ("import os, sys, time; print('pid', os.getpid(), flush=True); print('train key k1', flush=True); "
           "time.sleep(float(sys.argv[1])); sys.exit(int(sys.argv[2]))")
RESOURCES = {"serlens_train_driver": 1.0}


def command(seconds: float, code: int = 0) -> list[str]:
    return [sys.executable, "-c", PROGRAM, str(seconds), str(code)]


@pytest.fixture(scope="module")
def ledger():
    import ray

    if ray.is_initialized():  # an earlier test's route call connected this process to a Ray of its own
        ray.shutdown()
    ray.init(num_cpus=2, resources={"serlens_train_driver": 2}, include_dashboard=False,
             log_to_driver=False, logging_level="WARNING")
    try:
        yield registry()
    finally:
        ray.shutdown()


def admit(ledger, job_id: str, seconds: float, *, key: str, code: int = 0, limit: int = 2) -> dict:
    import ray

    return ray.get(ledger.admit.remote(job_id, command(seconds, code), limit=limit, num_cpus=0.1,
                                       resources=RESOURCES, metadata={"request_key": key, "owner": "ann"}))


def wait_for(ledger, job_id: str, done, timeout_s: float = 60) -> dict:
    import ray

    deadline = time.monotonic() + timeout_s
    while not done(record := ray.get(ledger.get.remote(job_id))):
        assert time.monotonic() < deadline, record
        time.sleep(0.2)
    return record


def test_every_replica_finds_the_same_ledger(ledger):
    import ray

    assert ray.get_actor(REGISTRY_NAME, namespace=REGISTRY_NAMESPACE)._actor_id == registry()._actor_id
    assert ledger._actor_id == registry()._actor_id


def test_a_run_reports_its_output_and_its_exit_code(ledger):
    assert admit(ledger, "ok", 0.5, key="a")["outcome"] == "admitted"
    assert admit(ledger, "bad", 0.5, key="b", code=3)["outcome"] == "admitted"
    ok = wait_for(ledger, "ok", lambda r: r["state"] == "SUCCEEDED")
    assert "train key k1" in ok["logs"] and ok["end_time"] >= ok["start_time"]
    bad = wait_for(ledger, "bad", lambda r: r["state"] not in ("PENDING", "RUNNING"))
    assert bad["state"] == "FAILED" and bad["message"] == "serlens train exited with code 3"


def test_admission_one_run_per_key_and_at_most_the_limit(ledger):
    import ray

    first = admit(ledger, "long-1", 60, key="same")
    assert first["outcome"] == "admitted"
    again = admit(ledger, "long-2", 60, key="same")
    assert again["outcome"] == "same" and again["job"]["job_id"] == "long-1"
    assert admit(ledger, "long-3", 60, key="other", limit=1)["outcome"] == "full"
    assert ray.get(ledger.get.remote("long-3")) is None  # refused runs leave no record
    running = wait_for(ledger, "long-1", lambda r: r["state"] == "RUNNING" and r["logs"])
    pid = int(running["logs"][0].split()[1])
    assert ray.get(ledger.stop.remote("long-1")) is True
    assert ray.get(ledger.get.remote("long-1"))["state"] == "STOPPED"
    assert ray.get(ledger.active.remote()) == []
    # The stopped run's process is gone within the grace period (SIGTERM to its group).
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived its stopped run"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_fit_process_dies_with_the_worker_that_started_it(tmp_path):
    """A Ray worker killed hard runs no ``finally``: its fit must not live on outside Ray's books."""
    import signal
    import subprocess

    pid_file = tmp_path / "fit.pid"
    fit = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    worker = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from serlens.api.job_registry import start_fit_process; "
        f"start_fit_process([sys.executable, '-c', {fit!r}]); time.sleep(120)")])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        os.kill(worker.pid, signal.SIGKILL)  # as the OOM killer or a lost node would
        worker.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(child, signal.SIGKILL)
        pytest.fail("the fit's process outlived the worker that started it")
    finally:
        worker.kill()
