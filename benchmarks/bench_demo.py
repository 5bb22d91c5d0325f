"""Claim: `serlens run` with the embedded default finishes in at most 5 minutes on 2 cores.

Runs the real command twice in a fresh workdir (the second run reuses the store) and prints
the wall times; the last line is one JSON object.
Usage: python benchmarks/bench_demo.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(workdir: Path) -> float:
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    subprocess.run([sys.executable, "-m", "serlens.pipeline.cli", "run", "--workdir", str(workdir), "--quiet"],
                   check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="serlens-bench-demo-"))
    first = run(workdir)
    second = run(workdir)
    print(f"first run {first:.1f} s, second run (store reused) {second:.1f} s, on {os.cpu_count()} cores")
    print(json.dumps({"benchmark": "demo_run", "cores_serlens": os.cpu_count(), "cores_baseline": os.cpu_count(),
                      "baseline": "the same run with its store already filled", "first_run_s": round(first, 1),
                      "second_run_s": round(second, 1), "second_over_first": round(second / first, 3),
                      "target_s": 300, "meets_target": first <= 300}))


if __name__ == "__main__":
    main()
