"""What `serlens train` prints: one line per progress bar, no library INFO lines unless --verbose.

The real CLI in a subprocess (real local Ray, MLflow on sqlite, the tiny random WavLM), its
output captured as a log file would hold it (not a terminal). Lines are counted as a log
viewer counts them: split at newlines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = [
    "--set", "dataset.demo_speakers=12", "--set", "dataset.demo_sentences_per_emotion=1",
    "--set", "train.max_steps=4", "--set", "train.grad_accum_steps=1", "--set", "train.batch_size=4",
    "--set", "train.eval_every_steps=1", "--set", "train.checkpoint_every_steps=2",
]

#: The progress bars of `serlens train`: two in the driver, the fine-tuning one in a Ray worker.
BARS = ("checking audio", "normalising", "fine-tune")

#: A log line of a library at INFO (Python logging's and Ray's formats).
INFO_LINE = re.compile(r"\bINFO\b")


def train_log(workdir, *extra: str) -> list[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("SERLENS_VERBOSE", None)
    done = subprocess.run([sys.executable, "-m", "serlens.pipeline.cli", "train", "--workdir", str(workdir),
                           *TINY, *extra], capture_output=True, timeout=900, env=env)
    # Bytes, not text: text mode would turn a bar's in-place redraws ("\r") into new lines; in a
    # log only a newline starts a line.
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode == 0, out[-3000:] + err[-6000:]
    return (out + err).split("\n")


def bar_lines(lines: list[str], bar: str) -> int:
    return sum(bar in line and "%|" in line for line in lines)


def test_one_line_per_progress_bar_and_no_library_info(tmp_path):
    lines = train_log(tmp_path)
    report = "\n".join(repr(line[-150:]) for line in lines)
    for bar in BARS:
        assert bar_lines(lines, bar) == 1, f"{bar!r} bar:\n{report}"
    assert [line for line in lines if INFO_LINE.search(line)] == [], report
    assert not any("Writing model shards" in line or "Loading weights" in line for line in lines), report
    assert not any("Add type hints" in line for line in lines), report  # MLflow's advice, from the worker
    assert len(lines) <= 15, report


def test_verbose_shows_the_libraries_log_lines(tmp_path):
    lines = train_log(tmp_path, "--verbose")
    report = "\n".join(repr(line[-150:]) for line in lines)
    assert any(INFO_LINE.search(line) and "mlflow" in line for line in lines), report
    assert any("Writing model shards" in line for line in lines), report
    # The driver's bars keep one line each; the fine-tuning bar is redrawn after each forwarded
    # worker line (so it shares their lines), never given one per refresh.
    assert bar_lines(lines, "checking audio") == bar_lines(lines, "normalising") == 1, report
    worker_lines = sum("_task pid=" in line for line in lines)  # Ray forwards them as "(train_task pid=N) ..."
    assert 1 <= bar_lines(lines, "fine-tune") <= worker_lines + 1, report
