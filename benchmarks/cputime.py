"""CPU seconds used by this process and every process it started (Ray's included), for the benchmarks.

Ray's GCS and raylet are children of the driver that started them, and actors and Serve
replicas are children of the raylet, so the process tree holds all of a local Ray's work;
a multiprocessing pool's workers are children too. Both paths of a comparison are measured
the same way, idle background included.
"""

from __future__ import annotations

import psutil


def process_tree_cpu_s() -> float:
    """User + system CPU seconds so far of this process and all its descendants (living ones)."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended between listing and reading
            continue
        total += times.user + times.system
    return total
