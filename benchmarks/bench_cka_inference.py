"""Claim: every CKA statistic at CREMA-D scale takes <= 60 s on 2 cores.

Scale: n = 1,231 clips of 15 speakers; 8 checkpoints x 25 hidden states of 1,024 dims against
eGeMAPS (88 dims); both estimators; 10,000 within-speaker permutations per cell; the
delete-one-speaker jackknife; partial CKA (speaker, gender, sentence); change tests; drift and
layer x layer. Timed: ``CkaService.analyse`` as the pipeline runs it (float32 permutation
products, the default).

Baseline, in the same run on the same cores: the permutation null computed the obvious way,
recomputing CKA from permuted rows (``cka_against(cell, reference[perm])``, the estimator
serlens had, each Gram product redone per permutation) for a few (cell, permutation) pairs,
extrapolated to every cell and permutation. Both sides are compared in CPU seconds (the machine
is shared; wall time depends on the neighbours): the ratio is baseline / serlens.

CPU seconds (all threads) are printed beside the wall time: on a busy machine the wall time
overstates what 2 free cores need (about CPU seconds / 2).

Synthetic data: a speaker effect and a clip-level acoustic factor shared by both views; the
acoustic share fades with depth and fine-tuning step.

The last line is one JSON object with every figure.
Usage: python benchmarks/bench_cka_inference.py [--permutations 10000] [--checkpoints 8] [--layers 25]
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import time  # noqa: E402
from collections.abc import Iterator, Mapping  # noqa: E402

import numpy as np  # noqa: E402
from common import scale_parser

from serlens.cka import CkaArgs, CkaService  # noqa: E402
from serlens.cka.core import cka_against, standardize  # noqa: E402

TARGET_S = 60.0
SPEAKERS, SENTENCES, REFERENCE_DIM = 15, 12, 88


class LazyCells(Mapping[tuple[int, int], np.ndarray]):
    """(step, layer) -> clips x dim float32, generated on access (1 GB would not fit twice)."""

    def __init__(self, *, checkpoints: int, layers: int, dim: int, factors: np.ndarray, seed: int) -> None:
        self.keys_ = [(50 * c, layer) for c in range(checkpoints) for layer in range(layers)]
        self.checkpoints, self.layers, self.dim, self.factors, self.seed = checkpoints, layers, dim, factors, seed

    def __getitem__(self, key: tuple[int, int]) -> np.ndarray:
        step, layer = key
        rng = np.random.default_rng([self.seed, step, layer])
        depth, progress = layer / max(self.layers - 1, 1), step / max(50 * (self.checkpoints - 1), 1)
        weight = 1.0 - 0.8 * depth * (0.3 + 0.7 * progress)
        mixing = rng.standard_normal((self.factors.shape[1], self.dim), dtype=np.float32) / 4.0
        cell = rng.standard_normal((len(self.factors), self.dim), dtype=np.float32)
        cell += weight * (self.factors @ mixing)
        return cell

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def corpus(clips: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, list[str]]]:
    """Shared factors (clips x 24: speaker 8 + acoustic 16), eGeMAPS-like reference, confounds."""
    rng = np.random.default_rng(seed)
    speaker = np.sort(rng.integers(0, SPEAKERS, clips))
    sentence = rng.integers(0, SENTENCES, clips)
    factors = np.hstack([rng.standard_normal((SPEAKERS, 8))[speaker],
                         rng.standard_normal((clips, 16))]).astype(np.float32)
    reference = factors @ rng.standard_normal((24, REFERENCE_DIM)) + rng.standard_normal((clips, REFERENCE_DIM))
    labels = {"speaker": [f"{s}" for s in speaker], "gender": [f"{s % 2}" for s in speaker],
              "sentence": [f"{t}" for t in sentence]}
    return factors, reference, labels


def baseline_seconds(cells: Mapping[tuple[int, int], np.ndarray], reference: np.ndarray, speakers: list[str],
                     permutations: int, samples: int = 6) -> tuple[float, float]:
    """CPU seconds per (cell, permutation) recomputing CKA from permuted rows, and the extrapolation."""
    ref = standardize(reference)
    groups = np.asarray(speakers)
    rng = np.random.default_rng(1)
    x = standardize(next(iter(cells.values())))
    started = time.process_time()
    for _ in range(samples):
        perm = np.arange(len(groups))
        for label in np.unique(groups):
            members = np.flatnonzero(groups == label)
            perm[members] = rng.permutation(members)
        cka_against([x], ref[perm])
    per_pair = (time.process_time() - started) / samples
    return per_pair, per_pair * len(cells) * permutations


def main() -> None:
    parser = scale_parser(__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=10_000)
    args = parser.parse_args()

    factors, reference, labels = corpus(args.clips, args.seed)
    # Generated before the clock starts and held in memory, as the pipeline's load_cells does.
    cells = dict(LazyCells(checkpoints=args.checkpoints, layers=args.layers, dim=args.dim, factors=factors,
                           seed=args.seed))
    service = CkaService(config=CkaArgs(permutations=args.permutations, scheme="within_speaker").to_config())
    load = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    tables = service.analyse(cells, reference, speakers=labels["speaker"], confounds=labels)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    per_pair, baseline = baseline_seconds(cells, reference, labels["speaker"], args.permutations)
    debiased = [r for r in tables.cka if r["estimator"] == "debiased"]
    significant = sum(r["q_value"] < 0.05 for r in debiased)
    print(f"CKA inference, {len(cells)} cells x {args.permutations} within-speaker permutations, n = {args.clips}: "
          f"{seconds:.1f} s (target <= {TARGET_S:.0f} s; load average {load:.1f} on {os.cpu_count()} CPUs); "
          f"{cpu_seconds:.0f} CPU s; recomputing from permuted rows: {per_pair * 1e3:.1f} CPU ms per (cell, "
          f"permutation) -> {baseline:.0f} CPU s")
    print(json.dumps({
        "benchmark": "cka_inference", "cells": len(cells), "clips": args.clips, "dim": args.dim,
        "reference_dim": REFERENCE_DIM, "speakers": SPEAKERS, "permutations": args.permutations,
        "scheme": "within_speaker", "estimators": list(service.config.estimators),
        "rows": {name: len(rows) for name, rows in tables.by_table().items()},
        "debiased_cells_q_below_0_05": int(significant),
        "seconds_serlens": round(seconds, 2), "cpu_seconds_serlens": round(cpu_seconds, 1),
        "cpu_seconds_baseline_extrapolated": round(baseline, 1),
        "baseline_cpu_seconds_per_cell_permutation": round(per_pair, 5), "ratio_cpu": round(baseline / cpu_seconds, 1),
        "cores_serlens": 2, "cores_baseline": 2, "cpu_count": os.cpu_count(), "load_average_1m": round(load, 2),
        "target_s": TARGET_S, "meets_target": bool(seconds <= TARGET_S),
    }))


if __name__ == "__main__":
    main()
