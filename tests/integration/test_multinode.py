"""A real multi-node Ray run on the loopback address, and a worker node lost midway.

Three Ray nodes (``ray start`` processes) share this machine's disk, so the workdir is a folder
all see: a head with no CPU for tasks (it keeps the GCS) and two workers with one CPU each. The
run must spread work over both workers (recorded per stage in the ``stages`` table) and, when
one worker is killed during eGeMAPS, finish on the other with every row in the store.

Nodes on one machine share an IP, and a driver attaches to any node with its IP: the test reads
which node the run's driver is on (recorded in the run's provenance) and kills a worker that
is not that one, as losing the driver's own node ends any Ray job.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from support.ray_cluster import local_cluster, stop_node

from serlens.shared.store import FeatureStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = ["--set", "dataset.demo_speakers=12", "--set", "dataset.demo_sentences_per_emotion=6",
         "--set", "train.max_steps=4", "--set", "train.grad_accum_steps=1", "--set", "train.eval_every_steps=2",
         "--set", "train.checkpoint_every_steps=2", "--set", "probe.seeds=2",
         "--set", "split.holdout_fraction=0.5"]  # 4 speakers in subset 3, enough for speaker-grouped probes


@pytest.fixture
def cluster():
    with local_cluster([1, 1]) as running:
        yield running.address, running.workers


def _driver_node(store: FeatureStore) -> str:
    runs = store.read("runs", order_by=["created_at"]).to_pylist()
    return json.loads(runs[-1]["provenance_json"])["driver_node"]


def test_a_run_spreads_over_two_nodes_and_survives_losing_one(cluster, tmp_path):
    address, workers = cluster
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
    store = FeatureStore(workdir / "store")
    driver = _driver_node(store)
    victim = next(node for node in sorted(workers) if node != driver)
    stop_node(workers[victim], signal.SIGKILL)
    killed_at = time.time()
    out, _ = run.communicate(timeout=900)
    assert run.returncode == 0, out[-4000:]

    stages = {r["stage"]: r for r in store.read("stages").to_pylist()}
    prepare_nodes = json.loads(stages["prepare"]["nodes_json"])
    assert set(prepare_nodes) == set(workers), f"normalisation ran on {prepare_nodes}"
    assert victim not in json.loads(stages["embed"]["nodes_json"]), "a dead node embedded after its death"
    # The kill landed while eGeMAPS was still running, and the stage still finished in full.
    assert stages["egemaps"]["created_at"].timestamp() > killed_at
    clips = store.read("clips").to_pylist()
    analysed = {c["clip_id"] for c in clips if c["subset"] == 3}
    stored = store.read("egemaps", columns=["clip_id"]).column("clip_id").to_pylist()
    assert sorted(stored) == sorted(analysed)
    assert stages["egemaps"]["rows"] <= len(analysed)
    assert {"train", "embed", "cka", "probes"} <= set(stages)
