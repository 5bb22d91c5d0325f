"""What the benchmarks share (the one helper module they may share): the CREMA-D-scale workload's
arguments and synthetic cells, the naive probe baseline, and process-tree CPU time.

Scale: 1,231 clips (subset 3) from 15 speakers, 6 balanced classes, 8 checkpoints x 25 layers
of 1,024-d embeddings plus the 88 eGeMAPS features. The data is synthetic: each cell has a
class signal whose strength grows with the layer and, in the later layers, with the
fine-tuning step, and an "acoustic" part shared with the eGeMAPS-like features that fades in
the later layers, so F1 spans chance to well above it and ridge R² spans 0 to high.

The naive baseline trains single probes (``serlens.probe.naive.train_probe_naive``) in a pool
of as many processes as the vectorised trainer has threads, each on one torch thread (its
fastest setting), so both sides use the same cores.

CPU time: Ray's GCS and raylet are children of the driver that started them, and actors and
Serve replicas are children of the raylet, so the process tree holds all of a local Ray's work;
a multiprocessing pool's workers are children too. Both paths of a comparison are measured the
same way, idle background included.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

NUM_CLASSES = 6
EGEMAPS_DIM = 88
SPEAKERS = 15


def scale_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the CREMA-D-scale workload's sizes (add a script's own options to it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--layers", type=int, default=25)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--clips", type=int, default=1231)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def synthetic_cells(
    *, checkpoints: int, layers: int, dim: int, clips: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], list[np.ndarray], np.ndarray]:
    """Labels, speakers, cell keys (step, layer), n x dim float32 cells, n x 88 eGeMAPS-like."""
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(NUM_CLASSES), clips)
    rng.shuffle(labels)
    speakers = rng.integers(0, SPEAKERS, clips)
    acoustic = rng.standard_normal((clips, 16)).astype(np.float32)  # shared "acoustic" factors
    acoustic += 0.6 * rng.standard_normal((NUM_CLASSES, 16)).astype(np.float32)[labels]
    acoustic += 0.5 * rng.standard_normal((SPEAKERS, 16)).astype(np.float32)[speakers]
    mixing = rng.standard_normal((16, dim)).astype(np.float32) / 4.0
    keys, cells = [], []
    for c in range(checkpoints):
        for layer in range(layers):
            depth = layer / max(layers - 1, 1)
            progress = c / max(checkpoints - 1, 1)
            strength = 0.025 + 0.035 * depth + 0.03 * progress * depth
            means = rng.standard_normal((NUM_CLASSES, dim)).astype(np.float32) * strength
            cell = rng.standard_normal((clips, dim), dtype=np.float32)
            cell += means[labels]
            cell += (1.0 - 0.8 * depth * (0.3 + 0.7 * progress)) * (acoustic @ mixing)
            keys.append((50 * c, layer))
            cells.append(cell)
    egemaps = acoustic @ rng.standard_normal((16, EGEMAPS_DIM)).astype(np.float32)
    egemaps += rng.standard_normal((clips, EGEMAPS_DIM), dtype=np.float32)
    return labels, speakers, keys, cells, egemaps


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _naive_task(
    task: tuple[np.ndarray, np.ndarray, Any, int, Any],
) -> tuple[float, int, float, int, float]:
    from serlens.probe.naive import train_probe_naive

    x, labels, split, seed, config = task
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = train_probe_naive(x, labels, split, seed=seed, config=config)
    return (time.perf_counter() - started, outcome.epochs, outcome.f1_macro, outcome.best_epoch,
            time.process_time() - cpu_started)


def naive_pool(
    tasks: Sequence[tuple[np.ndarray, np.ndarray, Any, int, Any]], processes: int
) -> tuple[list[tuple[float, int, float, int, float]], float]:
    """Train each task's probe alone, in ``processes`` single-threaded worker processes.

    Returns:
        ``(per-task (seconds, epochs, f1 at stop, best epoch, CPU seconds), wall seconds of the
        pool)``;
        one warm-up probe per worker runs first, untimed.
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_init_worker) as pool:
        pool.map(_naive_task, [tasks[0]] * processes, chunksize=1)  # warm-up (imports, first ops)
        started = time.perf_counter()
        outcomes = pool.map(_naive_task, tasks, chunksize=1)
        wall = time.perf_counter() - started
    return outcomes, wall


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


def median_cpu_ms(function: Any, rounds: int, *, warm_up: bool = True) -> float:
    """Median CPU time of ``function()`` in milliseconds over ``rounds`` calls (after one warm-up call)."""
    if warm_up:
        function()
    times = []
    for _ in range(rounds):
        started = time.process_time()
        function()
        times.append((time.process_time() - started) * 1e3)
    return float(np.median(times))
