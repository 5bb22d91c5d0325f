"""Claims: at CREMA-D scale, every layer-wise probe trains in <= 60 s on 2 cores, >= 20x faster
than training the same probes one at a time.

Scale: 1,231 clips (subset 3), 6 balanced classes, 8 checkpoints x 25 layers of 1,024-d
embeddings plus the 88 eGeMAPS features, 10 seeds each: 2,010 probes. The data is synthetic:
each cell has a class signal whose strength grows with the layer and, in the later layers, with
the fine-tuning step (so F1 spans chance to well above it, and probes stop at varied epochs).

In the same run: ``train_probes`` on everything (timed), then ``train_probe_naive`` on a random
sample of probes (timed, torch on one thread, its fastest setting), extrapolated to all 2,010
probes by their epochs (each naive epoch costs the same; the vectorised run gives every probe's
epoch count, and the sample checks that both agree on epochs and F1 probe by probe).

The last line is one JSON object with every figure.
Usage: python benchmarks/bench_probes.py [--checkpoints 8] [--layers 25] [--dim 1024]
       [--clips 1231] [--naive-sample 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from serlens.probe.batched import train_probes
from serlens.probe.config import ProbeArgs
from serlens.probe.core import stratified_split, train_probe_naive

NUM_CLASSES = 6
EGEMAPS_DIM = 88
TARGET_S = 60.0
TARGET_SPEEDUP = 20.0


def synthetic_cells(
    *, checkpoints: int, layers: int, dim: int, clips: int, seed: int
) -> tuple[np.ndarray, list[tuple[int, int]], list[np.ndarray], np.ndarray]:
    """Labels, cell keys (step, layer), n x dim float32 cells, an n x 88 eGeMAPS-like array."""
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(NUM_CLASSES), clips)
    rng.shuffle(labels)
    acoustic = rng.standard_normal((clips, 16)).astype(np.float32)  # shared "acoustic" factors
    acoustic += 0.6 * rng.standard_normal((NUM_CLASSES, 16)).astype(np.float32)[labels]
    mixing = rng.standard_normal((16, dim)).astype(np.float32) / 4.0
    keys, cells = [], []
    for c in range(checkpoints):
        step = 50 * c
        for layer in range(layers):
            depth = layer / max(layers - 1, 1)
            progress = c / max(checkpoints - 1, 1)
            strength = 0.025 + 0.035 * depth + 0.03 * progress * depth
            means = rng.standard_normal((NUM_CLASSES, dim)).astype(np.float32) * strength
            cell = rng.standard_normal((clips, dim), dtype=np.float32)
            cell += means[labels]
            cell += (1.0 - 0.8 * depth * (0.3 + 0.7 * progress)) * (acoustic @ mixing)
            keys.append((step, layer))
            cells.append(cell)
    egemaps = acoustic @ rng.standard_normal((16, EGEMAPS_DIM)).astype(np.float32)
    egemaps += rng.standard_normal((clips, EGEMAPS_DIM), dtype=np.float32)
    return labels, keys, cells, egemaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--layers", type=int, default=25)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--clips", type=int, default=1231)
    parser.add_argument("--naive-sample", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    labels, keys, cells, egemaps = synthetic_cells(
        checkpoints=args.checkpoints,
        layers=args.layers,
        dim=args.dim,
        clips=args.clips,
        seed=args.seed,
    )
    feature_sets = [*cells, egemaps]
    config = ProbeArgs(device="cpu").to_config()
    split = stratified_split(labels, config.split, config.split_seed)
    num_probes = len(feature_sets) * config.seeds
    threads = torch.get_num_threads()

    started = time.perf_counter()
    results = train_probes(feature_sets, labels, split, config=config)
    vectorised_s = time.perf_counter() - started

    rng = np.random.default_rng(args.seed + 1)
    picks = rng.choice(num_probes, size=min(args.naive_sample, num_probes), replace=False)
    naive_s, naive_epochs, agree = 0.0, 0, 0
    torch.set_num_threads(1)
    try:
        train_probe_naive(
            feature_sets[-1], labels, split, seed=0, config=config
        )  # warm-up, not timed
        for pick in picks:
            set_index, seed = divmod(int(pick), config.seeds)
            started = time.perf_counter()
            outcome = train_probe_naive(
                feature_sets[set_index], labels, split, seed=seed, config=config
            )
            naive_s += time.perf_counter() - started
            naive_epochs += outcome.epochs
            batched = results.outcome(set_index, seed)
            agree += int(
                outcome.epochs == batched.epochs and abs(outcome.f1_macro - batched.f1_macro) < 1e-9
            )
    finally:
        torch.set_num_threads(threads)
    per_epoch_s = naive_s / naive_epochs
    naive_all_s = per_epoch_s * float(results.epochs.sum())
    naive_all_by_count_s = naive_s / len(picks) * num_probes
    speedup = naive_all_s / vectorised_s

    f1 = results.f1_macro[:-1].mean(axis=1).reshape(args.checkpoints, args.layers)
    print(
        f"{num_probes} probes ({len(cells)} cells x {args.dim} d + eGeMAPS {EGEMAPS_DIM} d, "
        f"{config.seeds} seeds, {args.clips} clips, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})"
    )
    print(
        f"  train_probes:      {vectorised_s:7.1f} s  (epochs per probe: mean "
        f"{results.epochs.mean():.1f}, min {results.epochs.min()}, max {results.epochs.max()})"
    )
    print(
        f"  train_probe_naive: {naive_s:7.1f} s for {len(picks)} sampled probes "
        f"({naive_epochs} epochs; {agree}/{len(picks)} agree with train_probes on epochs and F1)"
    )
    print(
        f"  naive, all probes: {naive_all_s:7.1f} s extrapolated by epochs "
        f"({naive_all_by_count_s:.1f} s by probe count) -> speedup {speedup:.1f}x"
    )
    print(
        f"  mean macro-F1 by layer, first / last checkpoint: "
        f"{np.round(f1[0, ::4], 2).tolist()} / {np.round(f1[-1, ::4], 2).tolist()}; "
        f"eGeMAPS {results.f1_macro[-1].mean():.2f}"
    )
    meets = vectorised_s <= TARGET_S and speedup >= TARGET_SPEEDUP
    print(
        json.dumps(
            {
                "benchmark": "probes",
                "probes": num_probes,
                "cells": len(cells),
                "dim": args.dim,
                "egemaps_dim": EGEMAPS_DIM,
                "clips": args.clips,
                "seeds": config.seeds,
                "device": "cpu",
                "torch_threads": threads,
                "cpu_count": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "train_probes_s": round(vectorised_s, 2),
                "mean_epochs": round(float(results.epochs.mean()), 2),
                "naive_sample": len(picks),
                "naive_sample_s": round(naive_s, 2),
                "naive_agree": agree,
                "naive_all_extrapolated_s": round(naive_all_s, 1),
                "naive_all_by_count_s": round(naive_all_by_count_s, 1),
                "speedup": round(speedup, 1),
                "target_s": TARGET_S,
                "target_speedup": TARGET_SPEEDUP,
                "meets_target": bool(meets),
            }
        )
    )


if __name__ == "__main__":
    main()
