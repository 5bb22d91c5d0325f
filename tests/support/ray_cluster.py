"""A real multi-node Ray cluster on the loopback address: separate ``ray start`` processes.

Used by the multi-node test and benchmark. The head keeps the GCS; each worker node is its own
process group, so killing the group takes the whole node down as losing a machine would. Nodes
on one machine share an IP; a driver attaches to any of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from support.mlflow_server import free_port


def _ray_node(args: list[str], temp_dir: str) -> subprocess.Popen:
    ray = Path(sys.executable).with_name("ray")
    cmd = [str(ray), "start", "--block", "--node-ip-address=127.0.0.1", "--num-gpus=0",
           f"--temp-dir={temp_dir}", "--disable-usage-stats", *args]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def stop_node(node: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a node's whole process group (SIGKILL: as if its machine died)."""
    if node.poll() is None:
        os.killpg(node.pid, sig)
    try:
        node.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()


def alive_nodes(address: str, count: int, timeout_s: float = 90.0) -> set[str]:
    """The ids of the alive nodes, once there are ``count`` of them."""
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True)
        alive = set(out.stdout.split()) if out.returncode == 0 else set()
        if len(alive) == count:
            return alive
        time.sleep(1.0)
    raise AssertionError(f"{count} Ray nodes did not come up at {address}")


@dataclass
class LocalCluster:
    """A running cluster: its address, and each worker node's process by node id."""

    address: str
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)


@contextmanager
def local_cluster(worker_cpus: list[int], *, head_cpus: int = 0) -> Iterator[LocalCluster]:
    """Start a head (``head_cpus`` CPUs for tasks) and one worker node per entry of ``worker_cpus``.

    Yields the cluster once every node is up; stops every node on exit.
    """
    temp_dir = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    cluster = LocalCluster(f"127.0.0.1:{port}")
    head = _ray_node(["--head", f"--port={port}", "--include-dashboard=false", f"--num-cpus={head_cpus}"], temp_dir)
    try:
        known = alive_nodes(cluster.address, 1)
        for cpus in worker_cpus:
            worker = _ray_node([f"--address={cluster.address}", f"--num-cpus={cpus}"], temp_dir)
            alive = alive_nodes(cluster.address, len(known) + 1)
            (new,) = alive - known
            cluster.workers[new], known = worker, alive
        yield cluster
    finally:
        for worker in cluster.workers.values():
            stop_node(worker)
        stop_node(head)
