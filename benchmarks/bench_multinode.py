"""Claim: a study spreads over a multi-node Ray cluster, each node doing its share, at no cost in time.

Runs the same `serlens run` (a small demo config) twice on the same machine's cores, each in a
fresh workdir: on a cluster of separate Ray node processes (a head that runs no tasks and two
worker nodes, one CPU each), and on one node with the same two CPUs. Prints the wall time of
each, the per-node item counts the stages recorded (``stages.nodes_json``), and one JSON line.
Both sides get the same cores, so the ratio is the price of going through several nodes
(object transfers between node stores, scheduling across raylets), not a speed-up.
Usage: python benchmarks/bench_multinode.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.ray_cluster import local_cluster  # noqa: E402

from serlens.shared.store import FeatureStore  # noqa: E402

SMALL = ["--set", "dataset.demo_speakers=12", "--set", "dataset.demo_sentences_per_emotion=6",
         "--set", "train.max_steps=4", "--set", "train.grad_accum_steps=1", "--set", "train.eval_every_steps=2",
         "--set", "train.checkpoint_every_steps=2", "--set", "probe.seeds=2", "--set", "split.holdout_fraction=0.5"]
FANNED_OUT = ("prepare", "egemaps", "embed")


def run_on(address: str, workdir: Path) -> tuple[float, dict[str, dict[str, int]]]:
    """Wall seconds of one run on the cluster at ``address``, and items per node of each fanned-out stage."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "serlens.pipeline.cli", "run", "--address", address, "--workdir",
                    str(workdir), "--quiet", *SMALL], check=True, env=env)
    seconds = time.perf_counter() - started
    stages = {r["stage"]: r for r in FeatureStore(workdir / "store").read("stages").to_pylist()}
    nodes = {s: json.loads(stages[s]["nodes_json"] or "{}") for s in FANNED_OUT if s in stages}
    return seconds, nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="serlens-bench-multinode-"))
    with local_cluster([1, 1]) as cluster:
        multi_s, per_node = run_on(cluster.address, root / "two-nodes")
    with local_cluster([], head_cpus=2) as cluster:
        single_s, _ = run_on(cluster.address, root / "one-node")
    nodes_used = {stage: len(counts) for stage, counts in per_node.items()}
    print(f"two worker nodes: {multi_s:.1f} s; one node: {single_s:.1f} s; items per node: {per_node}")
    print(json.dumps({"benchmark": "multinode_run", "nodes_serlens": 2, "nodes_baseline": 1,
                      "cores_serlens": 2, "cores_baseline": 2, "seconds_two_nodes": round(multi_s, 1),
                      "seconds_one_node": round(single_s, 1), "two_over_one": round(multi_s / single_s, 3),
                      "items_per_node": per_node, "nodes_used": nodes_used,
                      "every_fanned_out_stage_on_both_nodes": all(n == 2 for n in nodes_used.values()),
                      "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
