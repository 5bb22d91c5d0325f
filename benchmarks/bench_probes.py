"""Claims: at CREMA-D scale, every layer-wise probe trains in <= 60 s on 2 cores, >= 20x faster
than training the same probes one at a time on the same cores.

Workload (``common.py``): 8 checkpoints x 25 layers of 1,024-d embeddings plus the 88
eGeMAPS features, 1,231 clips, 10 seeds each: 2,010 probes, the paper's single split.

In the same run: ``train_probes`` on everything (timed, torch on N threads), then
``train_probe_naive`` on a random sample of probes in a pool of N single-threaded processes
(equal hardware: N cores each side), extrapolated to all 2,010 probes by their epochs (each
naive epoch costs the same; the vectorised run gives every probe's epoch count, and the sample
checks that both agree on epochs and F1 probe by probe). The naive side is credited with
perfect scaling over its N processes (its summed per-probe time divided by N).

The last line is one JSON object with every figure.
Usage: python benchmarks/bench_probes.py [--checkpoints 8] [--layers 25] [--dim 1024]
       [--clips 1231] [--naive-sample 30] [--seed 0]
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
from common import EGEMAPS_DIM, naive_pool, scale_parser, synthetic_cells

from serlens.probe.batched import train_probes
from serlens.probe.config import ProbeArgs
from serlens.probe.core import stratified_split

TARGET_S = 60.0
TARGET_SPEEDUP = 20.0


def main() -> None:
    parser = scale_parser(__doc__.splitlines()[0])
    parser.add_argument("--naive-sample", type=int, default=30)
    args = parser.parse_args()

    labels, _, _, cells, egemaps = synthetic_cells(
        checkpoints=args.checkpoints, layers=args.layers, dim=args.dim, clips=args.clips,
        seed=args.seed,
    )
    feature_sets = [*cells, egemaps]
    config = ProbeArgs(device="cpu", protocol="paper").to_config()
    split = stratified_split(labels, config.split, config.split_seed)
    num_probes = len(feature_sets) * config.seeds
    threads = torch.get_num_threads()

    started, cpu_started = time.perf_counter(), time.process_time()
    results = train_probes(feature_sets, labels, split, config=config)
    vectorised_s, vectorised_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started

    rng = np.random.default_rng(args.seed + 1)
    picks = rng.choice(num_probes, size=min(args.naive_sample, num_probes), replace=False)
    tasks = [(feature_sets[p // config.seeds], labels, split, int(p % config.seeds), config) for p in picks]
    outcomes, pool_wall_s = naive_pool(tasks, threads)
    naive_cpu_s = sum(o[0] for o in outcomes)  # wall seconds of each probe, summed
    naive_epochs = sum(o[1] for o in outcomes)
    agree = sum(
        int(o[1] == results.epochs[p // config.seeds, p % config.seeds]
            and abs(o[2] - results.f1_macro[p // config.seeds, p % config.seeds]) < 1e-9)
        for o, p in zip(outcomes, picks, strict=True)
    )
    # Perfect scaling credited to the baseline: its per-probe times, summed, over N processes.
    naive_all_s = naive_cpu_s / naive_epochs * float(results.epochs.sum()) / threads
    speedup = naive_all_s / vectorised_s
    # CPU seconds (all threads or processes): robust where other jobs share the cores.
    naive_all_cpu_s = sum(o[4] for o in outcomes) / naive_epochs * float(results.epochs.sum())

    f1 = results.f1_macro_best[:-1].mean(axis=1).reshape(args.checkpoints, args.layers)
    print(
        f"{num_probes} probes ({len(cells)} cells x {args.dim} d + eGeMAPS {EGEMAPS_DIM} d, "
        f"{config.seeds} seeds, {args.clips} clips; train_probes on {threads} torch threads, "
        f"naive on {threads} processes; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})"
    )
    print(f"  train_probes:      {vectorised_s:7.1f} s  (epochs per probe: mean {results.epochs.mean():.1f})")
    print(f"  train_probe_naive: {naive_cpu_s:7.1f} s summed over {len(picks)} sampled probes "
          f"({pool_wall_s:.1f} s wall on {threads} processes; {agree}/{len(picks)} agree on epochs and F1)")
    print(f"  naive, all probes: {naive_all_s:7.1f} s on {threads} processes -> speedup {speedup:.1f}x")
    print(f"  CPU seconds: train_probes {vectorised_cpu_s:.1f}, naive (extrapolated) {naive_all_cpu_s:.1f} "
          f"-> {naive_all_cpu_s / vectorised_cpu_s:.1f}x less CPU")
    print(f"  mean macro-F1 (best weights) by layer, first / last checkpoint: "
          f"{np.round(f1[0, ::4], 2).tolist()} / {np.round(f1[-1, ::4], 2).tolist()}")
    print(json.dumps({
        "benchmark": "probes", "probes": num_probes, "cells": len(cells), "dim": args.dim,
        "egemaps_dim": EGEMAPS_DIM, "clips": args.clips, "seeds": config.seeds, "device": "cpu",
        "cores_serlens": threads, "cores_baseline": threads, "baseline": "train_probe_naive, "
        f"{threads} single-threaded processes, perfect scaling credited",
        "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "train_probes_s": round(vectorised_s, 2), "mean_epochs": round(float(results.epochs.mean()), 2),
        "naive_sample": len(picks), "naive_sample_cpu_s": round(naive_cpu_s, 2),
        "naive_sample_wall_s": round(pool_wall_s, 2), "naive_agree": agree,
        "naive_all_extrapolated_s": round(naive_all_s, 1), "speedup": round(speedup, 1),
        "train_probes_cpu_s": round(vectorised_cpu_s, 2), "naive_all_cpu_s": round(naive_all_cpu_s, 1),
        "speedup_by_cpu": round(naive_all_cpu_s / vectorised_cpu_s, 1),
        "target_s": TARGET_S, "target_speedup": TARGET_SPEEDUP,
        "meets_target": bool(vectorised_s <= TARGET_S and speedup >= TARGET_SPEEDUP),
    }))


if __name__ == "__main__":
    main()
