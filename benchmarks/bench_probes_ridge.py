"""Claim: at CREMA-D scale, the per-eGeMAPS-feature ridge probes (200 cells x 88 targets and
their 88 controls, 5 speaker-grouped folds, a 10-value α grid chosen by nested grouped CV) run
in <= 60 s on 2 cores, far faster than scikit-learn's ``RidgeCV`` per target on the same cores.

Workload (``common.py``): 1,231 clips from 15 speakers, 8 checkpoints x 25 layers of
1,024-d embeddings; the targets are the 88 eGeMAPS-like features. In the same run:
``serlens.probe.ridge.ridge_probes`` on every cell (N worker threads), then the baseline on a
sample of (cell, target) pairs: for each outer fold, ``RidgeCV(alphas, cv=<the same inner
folds>, scoring=<summed squared error>)`` fitted on the outer-train clips and scored on the
fold (the same nested grouped CV), in N single-threaded processes, extrapolated to every
(cell, target and control) pair with perfect scaling credited. The sampled R² of both must agree.

The last line is one JSON object with every figure.
Usage: python benchmarks/bench_probes_ridge.py [--checkpoints 8] [--layers 25] [--dim 1024]
       [--clips 1231] [--baseline-sample 6] [--seed 0]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import numpy as np
import torch
from common import EGEMAPS_DIM, scale_parser, synthetic_cells

from serlens.probe.config import ProbeArgs
from serlens.probe.folds import grouped_folds
from serlens.probe.ridge import ridge_probes, zscore

TARGET_S = 60.0


def _sklearn_r2(
    task: tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]],
) -> tuple[float, float, float]:
    """Nested grouped CV of one target with scikit-learn; returns (seconds, out-of-fold R², CPU seconds)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import make_scorer

    x, y, folds, alphas = task
    started, cpu_started = time.perf_counter(), time.process_time()
    scorer = make_scorer(lambda truth, predicted: -float(np.square(truth - predicted).sum()))
    predictions = np.empty_like(y)
    for fold in np.unique(folds):
        train = np.flatnonzero(folds != fold)
        inner = [(np.flatnonzero(folds[train] != j), np.flatnonzero(folds[train] == j))
                 for j in np.unique(folds[train])]
        model = RidgeCV(alphas=alphas, cv=inner, scoring=scorer).fit(x[train], y[train])
        predictions[folds == fold] = model.predict(x[folds == fold])
    r2 = 1 - np.square(y - predictions).sum() / np.square(y - y.mean()).sum()
    return time.perf_counter() - started, float(r2), time.process_time() - cpu_started


def _baseline(tasks: list, processes: int) -> list[tuple[float, float, float]]:
    # One BLAS thread per process: set before the children import numpy (spawned).
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(dict.fromkeys(saved, "1"))
    try:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pool.map(_sklearn_r2, tasks[:processes], chunksize=1)  # warm-up
            return pool.map(_sklearn_r2, tasks, chunksize=1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main() -> None:
    parser = scale_parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline-sample", type=int, default=6)
    args = parser.parse_args()

    _, speakers, _, cells, egemaps = synthetic_cells(
        checkpoints=args.checkpoints, layers=args.layers, dim=args.dim, clips=args.clips, seed=args.seed,
    )
    config = ProbeArgs(device="cpu").to_config()
    folds = grouped_folds(speakers, config.folds, config.split_seed)
    threads = torch.get_num_threads()

    started, cpu_started = time.perf_counter(), time.process_time()
    results = ridge_probes(cells, egemaps, folds, alphas=config.ridge_alphas, control_seed=0)
    serlens_s, serlens_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started

    rng = np.random.default_rng(args.seed + 1)
    pairs = [(int(c), int(t)) for c, t in zip(rng.integers(0, len(cells), args.baseline_sample),
                                               rng.integers(0, EGEMAPS_DIM, args.baseline_sample), strict=True)]
    targets = zscore(egemaps)
    tasks = [(zscore(cells[c]), targets[:, t], folds, config.ridge_alphas) for c, t in pairs]
    outcomes = _baseline(tasks, threads)
    per_target_s = sum(o[0] for o in outcomes) / len(outcomes)
    fits = len(cells) * 2 * EGEMAPS_DIM  # every target and its control
    baseline_s = per_target_s * fits / threads
    # CPU seconds (all threads or processes): robust where other jobs share the cores.
    baseline_cpu_s = sum(o[2] for o in outcomes) / len(outcomes) * fits
    worst = max(abs(o[1] - results[c].r2[t]) for o, (c, t) in zip(outcomes, pairs, strict=True))
    r2 = np.array([r.r2 for r in results])
    control = np.array([r.r2_control for r in results])
    print(f"ridge probes: {len(cells)} cells x {EGEMAPS_DIM} targets (+ controls), {args.clips} clips x "
          f"{args.dim} d, {len(np.unique(folds))} folds, {len(config.ridge_alphas)} alphas; {threads} threads; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  serlens ridge_probes: {serlens_s:7.1f} s ({serlens_cpu_s:.1f} CPU s, "
          f"{serlens_cpu_s / len(cells):.2f} CPU s per cell)")
    print(f"  sklearn RidgeCV per target: {per_target_s:.2f} s each -> {baseline_s:.0f} s for all on "
          f"{threads} processes; speedup {baseline_s / serlens_s:.0f}x; max |ΔR²| on the sample {worst:.1e}")
    print(f"  R²: median {np.median(r2):.3f}, control mean {control.mean():.4f}, "
          f"control 95th percentile {np.percentile(control, 95):.4f}")
    print(json.dumps({
        "benchmark": "probes_ridge", "cells": len(cells), "targets": EGEMAPS_DIM, "with_controls": True,
        "clips": args.clips, "dim": args.dim, "folds": int(len(np.unique(folds))),
        "alphas": len(config.ridge_alphas), "device": "cpu", "cores_serlens": threads, "cores_baseline": threads,
        "baseline": f"sklearn RidgeCV per target (nested grouped CV), {threads} single-threaded processes, "
        "perfect scaling credited", "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2), "serlens_s": round(serlens_s, 2),
        "baseline_sample": len(pairs), "baseline_per_target_s": round(per_target_s, 3),
        "baseline_all_extrapolated_s": round(baseline_s, 1), "speedup": round(baseline_s / serlens_s, 1),
        "serlens_cpu_s": round(serlens_cpu_s, 2), "baseline_all_cpu_s": round(baseline_cpu_s, 1),
        "speedup_by_cpu": round(baseline_cpu_s / serlens_cpu_s, 1),
        "max_abs_r2_difference": float(f"{worst:.2e}"), "r2_median": round(float(np.median(r2)), 4),
        "control_r2_mean": round(float(control.mean()), 5), "target_s": TARGET_S,
        # The target is for the full CREMA-D scale only.
        "meets_target": bool(serlens_s <= TARGET_S and worst < 1e-6 and len(cells) >= 200
                             and args.clips >= 1231 and args.dim >= 1024),
    }))


if __name__ == "__main__":
    main()
