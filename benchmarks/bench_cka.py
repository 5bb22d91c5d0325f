"""Claim: CKA of 200 cells (1,231 clips x 1,024 dims) against eGeMAPS (1,231 x 88), linear and
debiased, takes <= 10 s on 2 cores.

Times ``CkaService.process`` as the pipeline runs it (standardising every cell, then
``cka_against``: each Gram once, the reference's once) on synthetic data at CREMA-D scale
(8 checkpoints x 25 layers) whose link to the reference fades with depth and fine-tuning. As a
check, a few cells are recomputed one by one with ``linear_cka`` / ``debiased_cka``.

The last line is one JSON object with every figure.
Usage: python benchmarks/bench_cka.py [--checkpoints 8] [--layers 25] [--dim 1024] [--clips 1231]
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from common import scale_parser

from serlens.cka import CkaArgs, CkaService
from serlens.cka.core import debiased_cka, linear_cka, standardize

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


def main() -> None:
    parser = scale_parser(__doc__.splitlines()[0])
    args = parser.parse_args()

    cells, reference = synthetic_cells(
        checkpoints=args.checkpoints,
        layers=args.layers,
        dim=args.dim,
        clips=args.clips,
        seed=args.seed,
    )
    # The estimators alone: no permutations, no confounds (bench_cka_inference.py times those).
    service = CkaService(config=CkaArgs(permutations=0, confounds=[]).to_config())
    started = time.perf_counter()
    rows = service.process(cells, reference)
    seconds = time.perf_counter() - started

    values = {(r["checkpoint_step"], r["layer"], r["estimator"]): r["value"] for r in rows}
    ref = standardize(reference)
    worst = 0.0
    for key in list(cells)[:: max(1, len(cells) // 4)]:
        x = standardize(cells[key])
        worst = max(
            worst,
            abs(values[(*key, "linear")] - linear_cka(x, ref)),
            abs(values[(*key, "debiased")] - debiased_cka(x, ref)),
        )
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
        f"load average {os.getloadavg()[0]:.2f})"
    )
    print(
        f"  linear CKA, first checkpoint, every 6th layer: {np.round(linear[0, ::6], 3).tolist()}; "
        f"last: {np.round(linear[-1, ::6], 3).tolist()}"
    )
    print(f"  batched vs one-by-one, largest difference: {worst:.1e}")
    print(
        json.dumps(
            {
                "benchmark": "cka",
                "cells": len(cells),
                "clips": args.clips,
                "dim": args.dim,
                "reference_dim": EGEMAPS_DIM,
                "estimators": list(service.config.estimators),
                "cpu_count": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "seconds": round(seconds, 3),
                "seconds_per_cell": round(seconds / len(cells), 4),
                "max_abs_diff_vs_one_by_one": worst,
                "target_s": TARGET_S,
                "meets_target": bool(meets),
            }
        )
    )


if __name__ == "__main__":
    main()
