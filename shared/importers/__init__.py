"""Importers: turn a corpus in another layout into a manifest that ``serlens run`` reads.

Each importer checks everything first and writes nothing when a problem is found (every
problem named in one ``InvalidInputError``); then it writes ``<out>/manifest.csv`` (and, for
a Hugging Face dataset, the audio under ``<out>/audio/``). ``serlens import ravdess`` and
``serlens import hf-datasets`` are the commands (``serlens.shared.importers.command``).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serlens.shared.manifest import MANIFEST_OPTIONAL, MANIFEST_REQUIRED

MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class ImportResult:
    """What an importer wrote.

    Attributes:
        manifest: the manifest file.
        rows: clips written.
        labels: label -> clips, most frequent first.
        left_out: why -> clips not written on purpose (e.g. RAVDESS's calm, outside the label set).
    """

    manifest: Path
    rows: int
    labels: dict[str, int]
    left_out: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """What was written and the command that runs the study on it."""
        labels = ", ".join(f"{label} ({n})" for label, n in self.labels.items())
        lines = [f"wrote {self.rows} clip(s) to {self.manifest}", f"labels: {labels}"]
        lines += [f"left out: {why} ({n})" for why, n in self.left_out.items()]
        lines.append(f"run the study on it:\n  serlens run --config crema-d --set dataset.kind=manifest "
                     f"--set dataset.path={self.manifest} --set 'dataset.labels=[{', '.join(sorted(self.labels))}]'")
        return "\n".join(lines)


def write_manifest_csv(out: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]],
                       left_out: Mapping[str, int] | None = None) -> ImportResult:
    """Write ``rows`` as ``<out>/manifest.csv`` atomically (temporary name, then rename).

    Columns are the manifest's (``serlens.shared.manifest``) that any row uses, in their order.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    used = {key for row in rows for key, value in row.items() if value not in (None, "")}
    columns = [c for c in (*MANIFEST_REQUIRED, *MANIFEST_OPTIONAL) if c in used or c in MANIFEST_REQUIRED]
    final = folder / MANIFEST_NAME
    tmp = folder / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, final)
    counts = Counter(str(row["label"]) for row in rows)
    return ImportResult(final, len(rows), dict(counts.most_common()), dict(left_out or {}))
