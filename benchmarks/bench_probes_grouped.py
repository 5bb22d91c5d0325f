"""Claim: at CREMA-D scale, the ``grouped_cv`` classification probes (200 cells + eGeMAPS,
10 seeds, 5 speaker-grouped folds) train in <= 120 s on 2 cores.

Workload (``common.py``): 1,231 clips from 15 speakers, 8 checkpoints x 25 layers of
1,024-d embeddings plus the 88 eGeMAPS features: 2,010 probes per fold, 10,050 in all, every
clip predicted once. In the same run, the naive baseline: ``train_probe_naive`` on a random
sample of (probe, fold) pairs in a pool of as many single-threaded processes as the vectorised
trainer has threads, extrapolated to all 10,050 by epochs (perfect scaling credited).

The last line is one JSON object with every figure.
Usage: python benchmarks/bench_probes_grouped.py [--checkpoints 8] [--layers 25] [--dim 1024]
       [--clips 1231] [--folds 5] [--naive-sample 20] [--seed 0]
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
from common import naive_pool, scale_parser, synthetic_cells

from serlens.probe.config import ProbeArgs
from serlens.probe.protocols import protocol_splits, run_protocol
from serlens.probe.uncertainty import confusion_counts, f1_from_confusion, speaker_jackknife

TARGET_S = 120.0


def main() -> None:
    parser = scale_parser(__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--naive-sample", type=int, default=20)
    args = parser.parse_args()

    labels, speakers, _, cells, egemaps = synthetic_cells(
        checkpoints=args.checkpoints, layers=args.layers, dim=args.dim, clips=args.clips,
        seed=args.seed,
    )
    feature_sets = [*cells, egemaps]
    config = ProbeArgs(device="cpu", protocol="grouped_cv", folds=args.folds).to_config()
    threads = torch.get_num_threads()

    started, cpu_started = time.perf_counter(), time.process_time()
    splits = protocol_splits(config, labels, speakers)
    result = run_protocol(feature_sets, labels, splits, config=config, head="linear")
    interval = speaker_jackknife(result.predictions_best, labels[result.scored], speakers[result.scored], 6)
    vectorised_s, vectorised_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    scored_once = bool(np.array_equal(result.scored, np.arange(args.clips)))

    rng = np.random.default_rng(args.seed + 1)
    total = len(feature_sets) * config.seeds * len(splits)
    picks = rng.choice(total, size=min(args.naive_sample, total), replace=False)
    tasks = []
    for pick in picks.tolist():
        fold, rest = divmod(pick, len(feature_sets) * config.seeds)
        tasks.append((feature_sets[rest // config.seeds], labels, splits[fold], rest % config.seeds, config))
    outcomes, pool_wall_s = naive_pool(tasks, threads)
    per_epoch_s = sum(o[0] for o in outcomes) / sum(o[1] for o in outcomes)
    all_epochs = float(result.epochs.sum()) * len(splits)  # result.epochs is the mean over folds
    naive_all_s = per_epoch_s * all_epochs / threads
    naive_all_cpu_s = sum(o[4] for o in outcomes) / sum(o[1] for o in outcomes) * all_epochs
    f1 = f1_from_confusion(confusion_counts(result.predictions_best, labels[result.scored], 6)).mean(-1)
    print(f"{total} probes ({len(feature_sets)} feature sets x {config.seeds} seeds x {len(splits)} folds, "
          f"{args.clips} clips, {len(np.unique(speakers))} speakers; {threads} torch threads; "
          f"load average {os.getloadavg()[0]:.2f})")
    print(f"  grouped_cv probes + jackknife: {vectorised_s:7.1f} s; every clip scored once: {scored_once}")
    print(f"  naive on {threads} processes (extrapolated): {naive_all_s:7.1f} s -> "
          f"speedup {naive_all_s / vectorised_s:.1f}x")
    print(f"  CPU seconds: serlens {vectorised_cpu_s:.1f}, naive (extrapolated) {naive_all_cpu_s:.1f}")
    print(f"  macro-F1 last cell {f1[-2].mean():.3f} [{interval.low[-2]:.3f}, {interval.high[-2]:.3f}], "
          f"eGeMAPS {f1[-1].mean():.3f} [{interval.low[-1]:.3f}, {interval.high[-1]:.3f}]")
    print(json.dumps({
        "benchmark": "probes_grouped_cv", "probes": total, "cells": len(cells), "dim": args.dim,
        "clips": args.clips, "folds": len(splits), "seeds": config.seeds, "device": "cpu",
        "cores_serlens": threads, "cores_baseline": threads,
        "baseline": f"train_probe_naive, {threads} single-threaded processes, perfect scaling credited",
        "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "grouped_cv_s": round(vectorised_s, 2), "every_clip_once": scored_once,
        "mean_epochs": round(float(result.epochs.mean()), 2), "naive_sample": len(picks),
        "naive_sample_wall_s": round(pool_wall_s, 2), "naive_all_extrapolated_s": round(naive_all_s, 1),
        "speedup": round(naive_all_s / vectorised_s, 1), "grouped_cv_cpu_s": round(vectorised_cpu_s, 2),
        "naive_all_cpu_s": round(naive_all_cpu_s, 1), "speedup_by_cpu": round(naive_all_cpu_s / vectorised_cpu_s, 1),
        "target_s": TARGET_S,
        "meets_target": bool(vectorised_s <= TARGET_S and scored_once),
    }))


if __name__ == "__main__":
    main()
