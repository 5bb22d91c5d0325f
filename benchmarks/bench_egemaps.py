"""Claim: eGeMAPS through Ray on N cores keeps at least 0.9 of the throughput of N plain
processes (one per core) over the same files, measured in the same run on the same cores.

Generates voiced-like clips of 1-3 s as 16 kHz WAV in a temporary folder, then times, for
several rounds: (a) the direct path, one process per core (a multiprocessing pool, each
worker owning one ``EgemapsService``) fed the same chunks of file paths, (b) a pool of Ray
actors (one per core, each owning one ``EgemapsService``) reading the files themselves, and,
for reference only, (c) one ``EgemapsService`` in this process. For (a) and (b) the CPU
milliseconds per clip of the whole process tree (workers, Ray's own processes, this driver)
are reported too. Ray start-up, pool and actor creation and one warm-up clip per extractor
are left out of the timings (and named in the JSON). Every path must give identical features.

Usage: python benchmarks/bench_egemaps.py [--clips 120] [--rounds 3] [--chunk-size 6]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from common import process_tree_cpu_s
from ray.util import ActorPool

from serlens.egemaps import EgemapsArgs, EgemapsService
from serlens.shared.audio import TARGET_SAMPLING_RATE, read_wav, write_wav

TARGET_RATIO = 0.9
_WORKER_SERVICE: EgemapsService | None = None


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


def _start_direct_worker(warm_path: str) -> None:
    global _WORKER_SERVICE
    _WORKER_SERVICE = EgemapsService(config=EgemapsArgs().to_config())
    extract_files(_WORKER_SERVICE, [warm_path])


def _direct_chunk(paths: list[str]) -> np.ndarray:
    if _WORKER_SERVICE is None:
        raise RuntimeError("direct worker not started")
    return extract_files(_WORKER_SERVICE, paths)


def timed(function) -> tuple[object, float, float]:
    """``function()``'s result, wall seconds and CPU seconds of the whole process tree."""
    cpu, wall = process_tree_cpu_s(), time.perf_counter()
    result = function()
    return result, time.perf_counter() - wall, process_tree_cpu_s() - cpu


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
        extract_files(single, paths[:1])  # warm-up, as each worker and actor gets below
        direct = multiprocessing.get_context("spawn").Pool(
            workers, initializer=_start_direct_worker, initargs=(paths[0],))
        direct.map(_direct_chunk, [paths[:1]] * workers)  # every worker started
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

            rounds = []
            identical = True
            for _ in range(args.rounds):
                reference, single_s, _ = timed(lambda: extract_files(single, paths))
                parts, direct_s, direct_cpu = timed(lambda: direct.map(_direct_chunk, chunks, chunksize=1))
                identical &= bool(np.array_equal(np.concatenate(parts), reference))
                parts, ray_s, ray_cpu = timed(
                    lambda: list(pool.map(lambda actor, chunk: actor.process_files.remote(chunk), chunks)))
                identical &= bool(np.array_equal(np.concatenate(parts), reference))
                rounds.append({"single": single_s, "direct": direct_s, "ray": ray_s,
                               "direct_cpu": direct_cpu, "ray_cpu": ray_cpu})
        finally:
            ray.shutdown()
            direct.terminate()

    result = summarise(rounds, clips=len(paths), audio_s=audio_s, workers=workers, chunk_size=args.chunk_size)
    result.update({
        "identical_features": identical,
        "ray_startup_s": round(ray_startup_s, 2),
        "actor_startup_s": round(actor_startup_s, 2),
        "excluded_from_timing": "ray.init, pool and actor creation, one warm-up clip per worker and actor",
        "timed": "median over rounds; every path reads the WAV files and extracts 88 functionals; "
                 "CPU = user + system of the whole process tree (Ray's processes included)",
        "extractor_version": single.extractor_version,
        "load_average_1m_before": round(load_before, 2),
    })
    print(
        f"eGeMAPS over {result['clips']} clips ({result['audio_s']} s of audio), median of {args.rounds} rounds:\n"
        f"  direct, {workers} processes: {result['direct_clips_per_s']} clips/s, "
        f"{result['direct_cpu_ms_per_clip']} CPU ms/clip\n"
        f"  Ray, {workers} actors: {result['ray_clips_per_s']} clips/s, {result['ray_cpu_ms_per_clip']} CPU ms/clip\n"
        f"  Ray over direct {result['ray_over_direct']} (target {TARGET_RATIO}: "
        f"{'met' if result['meets_target'] else 'NOT met'}); features identical: {identical}\n"
        f"  for reference, one process: {result['one_process_clips_per_s']} clips/s; "
        f"load average before: {load_before:.2f} on {workers} CPUs (cores are shared)"
    )
    print(json.dumps(result))


def summarise(rounds: list[dict], *, clips: int, audio_s: float, workers: int, chunk_size: int) -> dict:
    """The JSON figures: medians over rounds, every ratio between paths on the same cores."""

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    direct_s, ray_s = median("direct"), median("ray")
    ratio = direct_s / ray_s
    return {
        "benchmark": "egemaps_ray",
        "clips": clips,
        "audio_s": round(audio_s, 1),
        "rounds": len(rounds),
        "cores_serlens": workers,
        "cores_baseline": workers,
        "chunk_size": chunk_size,
        "direct_s": round(direct_s, 3),
        "ray_s": round(ray_s, 3),
        "direct_clips_per_s": round(clips / direct_s, 2),
        "ray_clips_per_s": round(clips / ray_s, 2),
        "direct_cpu_ms_per_clip": round(median("direct_cpu") / clips * 1e3, 1),
        "ray_cpu_ms_per_clip": round(median("ray_cpu") / clips * 1e3, 1),
        "ray_over_direct": round(ratio, 3),
        # What the ratio is on saturated cores nobody else uses: robust to other load on the machine.
        "ray_over_direct_by_cpu": round(median("direct_cpu") / median("ray_cpu"), 3),
        "ray_over_direct_per_round": [round(r["direct"] / r["ray"], 3) for r in rounds],
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "one_process_clips_per_s": round(clips / median("single"), 2),
        "cores_one_process": 1,
    }


if __name__ == "__main__":
    main()
