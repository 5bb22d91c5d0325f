"""Claim: CKA of 200 cells (1,231 clips x 1,024 dims) against eGeMAPS (1,231 x 88), linear and
debiased, takes <= 10 s on 2 cores, far less than the textbook n x n computation on the same cores.

Times the estimators as the CKA stage computes its point estimates (standardising every
cell, then ``cka_against``: each Gram once, the reference's once) on synthetic data at CREMA-D
scale (8 checkpoints x 25 layers) whose link to the reference fades with depth and fine-tuning;
and, beside it, ``CkaService.process`` without permutations (the whole ``cka`` table: the
estimates with their effective ranks and analytic null means, from each cell's n x n Gram).

Baseline, in the same process on the same cores (numpy float32 products, as serlens', with the
same BLAS threads): the
textbook formulas with explicit n x n matrices, for a sample of cells, extrapolated to all of
them: linear CKA from ``tr(K H L H)`` with the centring matrix ``H = I - 11ᵀ/n`` (Kornblith et
al., 2019), debiased CKA from the unbiased HSIC of Song et al. (2012) with zeroed diagonals.
Both sides must agree on every sampled cell.

The last line is one JSON object with every figure.
Usage: python benchmarks/bench_cka.py [--checkpoints 8] [--layers 25] [--dim 1024] [--clips 1231]
       [--baseline-sample 8]
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from common import scale_parser

from serlens.cka import CkaArgs, CkaService
from serlens.cka.core import cka_against, standardize

EGEMAPS_DIM = 88
TARGET_S = 10.0


def synthetic_cells(
    *, checkpoints: int, layers: int, dim: int, clips: int, seed: int
) -> tuple[dict[tuple[int, int], np.ndarray], np.ndarray]:
    """(step, layer) -> n x dim float32 cells, and an n x 88 eGeMAPS-like reference."""
    rng = np.random.default_rng(seed)
    acoustic = rng.standard_normal((clips, 16)).astype(np.float32)
    reference = acoustic @ rng.standard_normal((16, EGEMAPS_DIM)).astype(np.float32)
    reference += rng.standard_normal((clips, EGEMAPS_DIM), dtype=np.float32)
    mixing = rng.standard_normal((16, dim)).astype(np.float32) / 4.0
    cells = {}
    for c in range(checkpoints):
        for layer in range(layers):
            depth, progress = layer / max(layers - 1, 1), c / max(checkpoints - 1, 1)
            cell = rng.standard_normal((clips, dim), dtype=np.float32)
            cell += (1.0 - 0.8 * depth * (0.3 + 0.7 * progress)) * (acoustic @ mixing)
            cells[(50 * c, layer)] = cell
    return cells, reference


def naive_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA as written: HSIC = tr(K H L H) / (n-1)² with the n x n centring matrix H."""
    n = len(x)
    centring = np.eye(n, dtype=x.dtype) - np.full((n, n), 1.0 / n, dtype=x.dtype)
    k, l_ = centring @ (x @ x.T) @ centring, centring @ (y @ y.T) @ centring
    return float(np.sum(k * l_, dtype=np.float64)
                 / np.sqrt(np.sum(k * k, dtype=np.float64) * np.sum(l_ * l_, dtype=np.float64)))


def _unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    n = len(k)
    k, l_ = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    ones = np.ones(n, dtype=k.dtype)
    return float((np.trace(k @ l_) + (ones @ k @ ones) * (ones @ l_ @ ones) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (ones @ k @ l_ @ ones)) / (n * (n - 3)))


def naive_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased CKA as written: the unbiased HSIC estimator on n x n Grams (Song et al., 2012)."""
    k, l_ = x @ x.T, y @ y.T
    return _unbiased_hsic(k, l_) / np.sqrt(_unbiased_hsic(k, k) * _unbiased_hsic(l_, l_))


def main() -> None:
    parser = scale_parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline-sample", type=int, default=8, help="cells computed the textbook way")
    args = parser.parse_args()

    cells, reference = synthetic_cells(
        checkpoints=args.checkpoints,
        layers=args.layers,
        dim=args.dim,
        clips=args.clips,
        seed=args.seed,
    )
    # The estimators alone: no permutations, no confounds (bench_cka_inference.py times those).
    # The estimators as the CKA stage computes its point estimates: standardise, then
    # cka_against (each Gram once, the reference's once).
    keys = sorted(cells)
    started = time.perf_counter()
    estimates = cka_against([standardize(cells[key]) for key in keys], standardize(reference), ("linear", "debiased"))
    seconds = time.perf_counter() - started
    # The whole `cka` table (no permutations or confounds): the estimates with their effective
    # ranks and analytic null means, which need each cell's n x n Gram besides.
    service = CkaService(config=CkaArgs(permutations=0, confounds=[]).to_config())
    started = time.perf_counter()
    rows = service.process(cells, reference)
    table_seconds = time.perf_counter() - started
    assert all(abs(r["value"] - estimates[keys.index((r["checkpoint_step"], r["layer"])),
                                          ("linear", "debiased").index(r["estimator"])]) < 1e-9 for r in rows)

    values = {(r["checkpoint_step"], r["layer"], r["estimator"]): r["value"] for r in rows}
    ref = standardize(reference)
    sample = list(cells)[:: max(1, len(cells) // max(1, args.baseline_sample))][: args.baseline_sample]
    worst = 0.0
    baseline_started = time.perf_counter()
    for key in sample:
        x = standardize(cells[key])
        worst = max(worst, abs(values[(*key, "linear")] - naive_linear_cka(x, ref)),
                    abs(values[(*key, "debiased")] - naive_debiased_cka(x, ref)))
    baseline_s = (time.perf_counter() - baseline_started) / len(sample) * len(cells)
    linear = np.array(
        [
            [values[(50 * c, layer, "linear")] for layer in range(args.layers)]
            for c in range(args.checkpoints)
        ]
    )
    meets = seconds <= TARGET_S
    print(
        f"CKA of {len(cells)} cells ({args.clips} x {args.dim}) with eGeMAPS "
        f"({args.clips} x {EGEMAPS_DIM}), "
        f"linear + debiased: {seconds:.2f} s (target <= {TARGET_S:.0f} s; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}); the whole cka table (ranks, nulls): {table_seconds:.2f} s"
    )
    print(
        f"  linear CKA, first checkpoint, every 6th layer: {np.round(linear[0, ::6], 3).tolist()}; "
        f"last: {np.round(linear[-1, ::6], 3).tolist()}"
    )
    print(f"  textbook n x n baseline: {baseline_s:.1f} s for all cells (from {len(sample)}); "
          f"largest difference {worst:.1e}")
    print(
        json.dumps(
            {
                "benchmark": "cka",
                "cells": len(cells),
                "clips": args.clips,
                "dim": args.dim,
                "reference_dim": EGEMAPS_DIM,
                "estimators": ["linear", "debiased"],
                "cpu_count": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "seconds": round(seconds, 3),
                "seconds_per_cell": round(seconds / len(cells), 4),
                "cka_table_seconds": round(table_seconds, 3),
                "cores_serlens": os.cpu_count(),
                "cores_baseline": os.cpu_count(),
                "baseline": "textbook n x n centring-matrix CKA, float32 products, same BLAS threads",
                "baseline_cells_sampled": len(sample),
                "baseline_seconds_extrapolated": round(baseline_s, 1),
                "speedup_vs_baseline": round(baseline_s / seconds, 1),
                "max_abs_diff_vs_baseline": worst,
                "target_s": TARGET_S,
                "meets_target": bool(meets),
            }
        )
    )


if __name__ == "__main__":
    main()
