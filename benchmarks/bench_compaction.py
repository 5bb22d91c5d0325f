"""Claim: after 10,000 single-clip writes to `clips` (``FeatureStore.write`` one row at a time,
as ``store=true`` uploads do), a count over `clips` through the SQL sandbox answers within 2x
its time at 10 files, because writes past the threshold compact their partition.

Measured on one store, same machine, same code path (``run_readonly_query``), best of 5:
- at 10 files (the reference);
- after ``--writes`` single-clip writes with automatic compaction (the claim);
- the baseline: ``--uncompacted-writes`` single-clip writes with compaction switched off (what
  every upload did before: one more file each), then the same store after ``serlens store
  compact`` (the manual command).

Prints one JSON line: files and /sql latency before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from serlens.shared.store import FeatureStore, feature_store, run_readonly_query
from serlens.shared.store.maintenance import compact


def clip_row(i: int) -> dict:
    return {"clip_id": f"c{i:06d}", "dataset": "uploads", "audio_sha256": f"h{i}", "label": "NEU"}


def count_seconds(store: FeatureStore, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run_readonly_query(store, "SELECT count(*) FROM clips")
        best = min(best, time.perf_counter() - started)
    return best


def write_clips(store: FeatureStore, start: int, stop: int) -> float:
    started = time.perf_counter()
    for i in range(start, stop):
        store.write("clips", [clip_row(i)], config_hash="uploads")
        if i and i % 1000 == 0:
            print(f"  {i} writes, {len(store.committed_files('clips'))} files", flush=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--uncompacted-writes", type=int, default=2_000)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(Path(tmp) / "auto").init()
        write_clips(store, 0, 10)
        at_10 = count_seconds(store)
        write_s = write_clips(store, 10, args.writes)
        auto_files, auto_s = len(store.committed_files("clips")), count_seconds(store)
        baseline = FeatureStore(Path(tmp) / "off").init()
        feature_store.AUTO_COMPACT_FILES = 10**9  # compaction off: every write one more file
        write_clips(baseline, 0, args.uncompacted_writes)
        before_files, before_s = len(baseline.committed_files("clips")), count_seconds(baseline)
        compact(baseline, ["clips"])
        after_files, after_s = len(baseline.committed_files("clips")), count_seconds(baseline)
    result = {
        "benchmark": "compaction", "cores_serlens": cores, "cores_baseline": cores,
        "sql_count_s_at_10_files": round(at_10, 4),
        "writes": args.writes, "write_ms_mean": round(1000 * write_s / max(1, args.writes - 10), 2),
        "auto_files": auto_files, "auto_sql_count_s": round(auto_s, 4),
        "auto_ratio_to_10_files": round(auto_s / at_10, 3),
        "uncompacted_writes": args.uncompacted_writes, "uncompacted_files": before_files,
        "uncompacted_sql_count_s": round(before_s, 4), "compacted_files": after_files,
        "compacted_sql_count_s": round(after_s, 4), "claim_holds": auto_s <= 2 * at_10,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
