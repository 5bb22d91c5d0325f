"""The workdir layout: the one place that knows where a run keeps each thing.

Everything a run or the API writes lives under one folder (README, "What a run produces"). The
pipeline, the report, the CLI, the API and the trainer ask a ``Workdir`` for paths and never
join folder names themselves; checkpoint folders are named here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serlens.shared.errors import InvalidConfigError
from serlens.shared.store import FeatureStore

#: Checkpoint folders are ``step-NNNNNN`` (optimizer steps, zero-padded to 6 digits).
CHECKPOINT_PREFIX = "step-"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d{{6,}})$")


def checkpoint_dirname(step: int) -> str:
    """Name the folder of the checkpoint after ``step`` optimizer steps: ``step-000050``.

    Raises:
        InvalidConfigError: for a negative step.
    """
    if step < 0:
        raise InvalidConfigError(f"checkpoint step must be >= 0, got {step}")
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def checkpoint_step(dirname: str) -> int | None:
    """Parse the step out of a checkpoint folder name (None when the name is not one)."""
    match = _CHECKPOINT_RE.match(dirname)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Workdir:
    """Where a run keeps everything, under one root folder."""

    root: Path

    def relative(self, path: str | Path) -> str:
        """How a row stores a path: relative to the root when under it (a moved workdir keeps it), else as is."""
        path = Path(path)
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)

    def resolve(self, stored: str | None) -> Path | None:
        """The path a row stored (``relative``), on this machine; rows written absolute stay so."""
        return None if not stored else self.root / stored

    def resolved(self, rows: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
        """``rows`` with ``column`` resolved (``resolve``) to an absolute path string."""
        return [{**row, column: str(self.resolve(row[column])) if row[column] else row[column]} for row in rows]

    @property
    def store_root(self) -> Path:
        """The feature store's folder (Parquet tables and the DuckDB file)."""
        return self.root / "store"

    @property
    def store(self) -> FeatureStore:
        """The feature store (Parquet + DuckDB views)."""
        return FeatureStore(self.store_root)

    @property
    def audio(self) -> Path:
        """Normalised audio, content-addressed by source hash, per normalisation config."""
        return self.root / "audio"

    def normalized_audio(self, norm_key: str) -> Path:
        """The normalised WAVs of one normalisation config: ``audio/norm-<key>``."""
        return self.audio / f"norm-{norm_key}"

    @property
    def checkpoints(self) -> Path:
        """Fine-tuning checkpoints, one folder per train key."""
        return self.root / "checkpoints"

    def train_dir(self, train_key: str) -> Path:
        """The folder of one fine-tuning run's checkpoints."""
        return self.checkpoints / train_key

    def checkpoint_dir(self, train_key: str, step: int) -> Path:
        """The folder of one checkpoint: ``checkpoints/<train key>/step-NNNNNN``."""
        return self.train_dir(train_key) / checkpoint_dirname(step)

    @property
    def figures(self) -> Path:
        """PNG and SVG figures."""
        return self.root / "figures"

    @property
    def report(self) -> Path:
        """The self-contained HTML report."""
        return self.root / "report.html"

    @property
    def runs(self) -> Path:
        """One folder per run with its resolved config."""
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        """The folder of one run (its resolved config)."""
        return self.runs / run_id

    @property
    def train_requests(self) -> Path:
        """Run configs posted to ``/train``, written as YAML for the job."""
        return self.root / "train-requests"

    @property
    def api_tokens(self) -> Path:
        """The API's token file (SHA-256 digests only) when no other is configured."""
        return self.root / "api-tokens.yaml"

    @property
    def models(self) -> Path:
        """Encoders the demo writes with ``save_pretrained`` (the tiny random WavLM)."""
        return self.root / "models"

    @property
    def demo_corpus(self) -> Path:
        """Where the demo config writes its generated corpus by default."""
        return self.root / "demo-corpus"
