"""Claim: eGeMAPS through Ray on 2 cores has at least 1.7x the throughput of one openSMILE
process over the same files, measured in the same run.

Generates voiced-like clips of 1-3 s as 16 kHz WAV in a temporary folder, then times, for
several rounds: (a) one ``EgemapsService`` over every file in turn, (b) a pool of Ray actors
(one per CPU, each owning one ``EgemapsService``) fed chunks of file paths and reading the
files themselves. Ray start-up, actor creation and one warm-up clip per extractor are left
out of both timings (and named in the JSON). Both paths must give identical features.

Usage: python benchmarks/bench_egemaps.py [--clips 120] [--rounds 3] [--chunk-size 6]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from ray.util import ActorPool

from serlens.egemaps import EgemapsArgs, EgemapsService
from serlens.shared.audio import TARGET_SAMPLING_RATE, read_wav, write_wav

TARGET_SPEEDUP = 1.7


def voiced_clip(rng: np.random.Generator, duration_s: float) -> np.ndarray:
    """A vowel-like clip: harmonics of a gliding F0 under syllable envelopes, plus some noise."""
    t = np.arange(int(duration_s * TARGET_SAMPLING_RATE)) / TARGET_SAMPLING_RATE
    f0 = rng.uniform(100, 260) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / TARGET_SAMPLING_RATE
    x = sum(np.sin(k * phase) / k**1.2 for k in range(1, 15))
    syllables = np.clip(np.sin(np.pi * t * rng.uniform(2, 5)), 0, None) ** 0.7
    x = 0.25 * syllables * x / np.max(np.abs(x)) + 2e-3 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def make_clips(folder: Path, count: int, seed: int) -> tuple[list[str], float]:
    """Write ``count`` clips of 1-3 s; return their paths and total duration in seconds."""
    rng = np.random.default_rng(seed)
    paths, total_s = [], 0.0
    for i in range(count):
        duration_s = float(rng.uniform(1.0, 3.0))
        path = folder / f"clip_{i:04d}.wav"
        write_wav(path, voiced_clip(rng, duration_s))
        paths.append(str(path))
        total_s += duration_s
    return paths, total_s


def extract_files(service: EgemapsService, paths: list[str]) -> np.ndarray:
    """Read each file and compute its 88 functionals: shape (len(paths), 88)."""
    rows = []
    for path in paths:
        signal, sampling_rate = read_wav(path)
        rows.append(service.process_batch([signal], sampling_rate)[0])
    return np.stack(rows)


@ray.remote(num_cpus=1)
class EgemapsWorker:
    """One extractor process: its own EgemapsService, created once."""

    def __init__(self) -> None:
        self.service = EgemapsService(config=EgemapsArgs().to_config())

    def process_files(self, paths: list[str]) -> np.ndarray:
        return extract_files(self.service, paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench_egemaps_") as tmp:
        paths, audio_s = make_clips(Path(tmp), args.clips, args.seed)
        chunks = [paths[i : i + args.chunk_size] for i in range(0, len(paths), args.chunk_size)]

        single = EgemapsService(config=EgemapsArgs().to_config())
        extract_files(single, paths[:1])  # warm-up, as each actor gets below

        start = time.perf_counter()
        ray.init(
            address="local", num_cpus=workers, include_dashboard=False, logging_level="warning"
        )
        try:
            ray_startup_s = time.perf_counter() - start
            start = time.perf_counter()
            actors = [EgemapsWorker.remote() for _ in range(workers)]
            ray.get([a.process_files.remote(paths[:1]) for a in actors])
            actor_startup_s = time.perf_counter() - start
            pool = ActorPool(actors)

            single_times, ray_times = [], []
            identical = True
            for _ in range(args.rounds):
                start = time.perf_counter()
                reference = extract_files(single, paths)
                single_times.append(time.perf_counter() - start)

                start = time.perf_counter()
                parts = list(
                    pool.map(lambda actor, chunk: actor.process_files.remote(chunk), chunks)
                )
                ray_times.append(time.perf_counter() - start)
                identical &= bool(np.array_equal(np.concatenate(parts), reference))
        finally:
            ray.shutdown()

    single_s, ray_s = statistics.median(single_times), statistics.median(ray_times)
    result = {
        "benchmark": "egemaps_ray",
        "clips": len(paths),
        "audio_s": round(audio_s, 1),
        "rounds": args.rounds,
        "workers": workers,
        "chunk_size": args.chunk_size,
        "single_process_s": round(single_s, 3),
        "ray_s": round(ray_s, 3),
        "single_process_clips_per_s": round(len(paths) / single_s, 2),
        "ray_clips_per_s": round(len(paths) / ray_s, 2),
        "speedup": round(single_s / ray_s, 3),
        "speedup_per_round": [
            round(a / b, 3) for a, b in zip(single_times, ray_times, strict=True)
        ],
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": single_s / ray_s >= TARGET_SPEEDUP,
        "identical_features": identical,
        "ray_startup_s": round(ray_startup_s, 2),
        "actor_startup_s": round(actor_startup_s, 2),
        "excluded_from_ray_timing": "ray.init, actor creation, one warm-up clip per actor",
        "timed": "median over rounds; both paths read the WAV files and extract 88 functionals",
        "extractor_version": single.extractor_version,
        "load_average_1m_before": round(load_before, 2),
    }
    print(
        f"eGeMAPS over {result['clips']} clips ({result['audio_s']} s of audio), "
        f"median of {args.rounds} rounds:\n"
        f"  one process : {single_s:.2f} s  ({result['single_process_clips_per_s']} clips/s)\n"
        f"  Ray, {workers} actors: {ray_s:.2f} s  ({result['ray_clips_per_s']} clips/s)\n"
        f"  speedup {result['speedup']}x (target {TARGET_SPEEDUP}x: "
        f"{'met' if result['meets_target'] else 'NOT met'}); features identical: {identical}\n"
        f"  not timed: Ray start-up {ray_startup_s:.1f} s, actor creation {actor_startup_s:.1f} s; "
        f"load average before: {load_before:.2f} on {workers} CPUs (cores are shared)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
