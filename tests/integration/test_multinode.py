"""A real multi-node Ray run on the loopback address, and a worker node lost midway.

Two Ray nodes (``ray start`` processes, one CPU each) on 127.0.0.1 share this machine's disk,
so the workdir is a folder both see. The run must spread work over both nodes (recorded per
stage in the ``stages`` table) and, when the worker node is killed during eGeMAPS, finish on the
head alone with every row in the store.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from serlens.shared.store import FeatureStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = ["--set", "dataset.demo_speakers=12", "--set", "dataset.demo_sentences_per_emotion=6",
         "--set", "train.max_steps=4", "--set", "train.grad_accum_steps=1", "--set", "train.eval_every_steps=2",
         "--set", "train.checkpoint_every_steps=2", "--set", "probe.seeds=2",
         "--set", "split.holdout_fraction=0.5"]  # 4 speakers in subset 3, enough for speaker-grouped probes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_node(args: list[str], temp_dir: str) -> subprocess.Popen:
    """A Ray node in its own process group, so that killing the group takes down the whole node."""
    ray = Path(sys.executable).with_name("ray")
    cmd = [str(ray), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
           f"--temp-dir={temp_dir}", "--disable-usage-stats", *args]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def _stop(node: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if node.poll() is None:
        os.killpg(node.pid, sig)
    try:
        node.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()


def _wait_for_nodes(address: str, count: int, timeout_s: float = 90.0) -> None:
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1.0)
    raise AssertionError(f"{count} Ray nodes did not come up at {address}")


@pytest.fixture
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _ray_node(["--head", f"--port={port}", "--include-dashboard=false"], temp_dir)
    worker = None
    try:
        _wait_for_nodes(address, 1)
        worker = _ray_node([f"--address={address}"], temp_dir)
        _wait_for_nodes(address, 2)
        yield address, worker
    finally:
        if worker is not None:
            _stop(worker)
        _stop(head)


def test_a_run_spreads_over_two_nodes_and_survives_losing_one(cluster, tmp_path):
    address, worker = cluster
    workdir = tmp_path / "work"
    run = subprocess.Popen([sys.executable, "-m", "serlens.pipeline.cli", "run", "--address", address,
                            "--workdir", str(workdir), "--quiet", *SMALL],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    egemaps = workdir / "store" / "tables" / "egemaps"
    deadline = time.monotonic() + 600
    while not list(egemaps.rglob("part-2*.parquet")):  # the first eGeMAPS chunk is stored
        assert run.poll() is None, run.stdout.read() if run.stdout else ""
        assert time.monotonic() < deadline, "eGeMAPS never started"
        time.sleep(0.05)
    _stop(worker, signal.SIGKILL)
    killed_at = time.time()
    out, _ = run.communicate(timeout=900)
    assert run.returncode == 0, out[-4000:]

    store = FeatureStore(workdir / "store")
    stages = {r["stage"]: r for r in store.read("stages").to_pylist()}
    prepare_nodes = json.loads(stages["prepare"]["nodes_json"])
    assert len(prepare_nodes) == 2, f"normalisation ran on {prepare_nodes}"
    # The kill landed while eGeMAPS was still running, and the stage still finished in full.
    assert stages["egemaps"]["created_at"].timestamp() > killed_at
    clips = store.read("clips").to_pylist()
    analysed = {c["clip_id"] for c in clips if c["subset"] == 3}
    stored = store.read("egemaps", columns=["clip_id"]).column("clip_id").to_pylist()
    assert sorted(stored) == sorted(analysed)
    assert stages["egemaps"]["rows"] <= len(analysed)
    assert {"train", "embed", "cka", "probes"} <= set(stages)
