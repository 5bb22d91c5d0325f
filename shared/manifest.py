"""A manifest's rows, checked one by one: its columns, their meaning, and every problem named.

A manifest is a CSV, TSV or Parquet table, one row per clip (the README's "Manifest" section):

=========  ========  =======================================================================
column     required  meaning
=========  ========  =======================================================================
path       yes       audio file (WAV, FLAC, OGG, MP3; any rate and channel count); relative
                     paths are relative to the manifest's folder
label      yes       class label; one of ``dataset.labels`` (in class-index order)
speaker    yes       speaker id (the unit the speaker-independent split and the statistics use)
gender     yes       one value per speaker (``F``/``M`` or the dataset's own)
id         no        unique clip id (default: the file's stem; a segment's gets ``_<start>-<end>``)
sentence   no        what was said (text or a code); a confound for partial CKA
start      no        segment start in seconds (default 0); the file is never cut
end        no        segment end in seconds (default: the file's end)
split      no        ``train``, ``validation`` or ``analysis`` (subsets 1, 2, 3) on every row:
                     replaces serlens' own speaker-independent split
=========  ========  =======================================================================
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

MANIFEST_REQUIRED = ("path", "label", "speaker", "gender")
MANIFEST_OPTIONAL = ("id", "sentence", "start", "end", "split")

#: The ``split`` column's values and the subsets they mean (``serlens.shared.splits``).
SPLIT_VALUES: dict[str, int] = {"train": 1, "validation": 2, "analysis": 3}

#: A checked row: ``(row number, culprit, audio path, ClipRecord fields)``.
PendingRow = tuple[int, str, str, dict[str, Any]]


def cell(value: Any) -> str:
    """Return a manifest cell as a stripped string; None, NaN and empty become ``""``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def read_manifest_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of a CSV, TSV or Parquet manifest.

    Raises:
        ValueError: for an unknown suffix or an unreadable file.
    """
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        tbl = pq.read_table(path)
        return list(tbl.column_names), tbl.to_pylist()
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    raise ValueError(f"unknown manifest format {path.suffix!r}; expected .csv, .tsv or .parquet")


def _seconds(text: str, column: str, errors: list[str]) -> float | None:
    """A ``start``/``end`` cell in seconds (None when empty); a bad value is added to ``errors``."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        errors.append(f"{column} {text!r} is not a number of seconds")
        return None
    if not math.isfinite(value) or value < 0:
        errors.append(f"{column} {text!r} must be a finite number of seconds >= 0")
        return None
    return value


def _segment(cells: Mapping[str, str], errors: list[str]) -> tuple[float | None, float | None]:
    start, end = _seconds(cells["start"], "start", errors), _seconds(cells["end"], "end", errors)
    if start is not None and end is not None and end <= start:
        errors.append(f"end {end:g} s is not after start {start:g} s")
    return start, end


def _split(cells: Mapping[str, str], has_split: bool, errors: list[str]) -> str | None:
    if not has_split:
        return None
    value = cells["split"].lower()
    if value not in SPLIT_VALUES:
        shown = repr(cells["split"]) if cells["split"] else "empty split"
        errors.append(f"{shown}; the split column needs one of {list(SPLIT_VALUES)} on every row "
                      "(or drop the column to let serlens split by speaker)")
        return None
    return value


def _clip_id(cells: Mapping[str, str], segment: tuple[float | None, float | None]) -> str:
    if cells["id"]:
        return cells["id"]
    stem = Path(cells["path"]).stem
    if segment == (None, None):
        return stem
    start, end = segment
    return f"{stem}_{start or 0:g}-{'end' if end is None else format(end, 'g')}"


def check_rows(
    rows: Iterable[Mapping[str, Any]], manifest: Path, labels: Sequence[str] | None, columns: Sequence[str]
) -> tuple[list[tuple[str, str]], list[PendingRow], dict[str, dict[str, list[int]]]]:
    """Check each manifest row on its own: ``(problems, rows to inspect, speaker -> gender -> rows)``."""
    name, has_split = manifest.name, "split" in columns
    problems: list[tuple[str, str]] = []
    seen_ids: dict[str, int] = {}
    speaker_genders: dict[str, dict[str, list[int]]] = {}
    pending: list[PendingRow] = []
    for number, row in enumerate(rows, start=1):
        cells = {key: cell(row.get(key)) for key in (*MANIFEST_REQUIRED, *MANIFEST_OPTIONAL)}
        errors: list[str] = []
        segment = _segment(cells, errors)
        split = _split(cells, has_split, errors)
        clip_id = _clip_id(cells, segment)
        culprit = f"{name} row {number} (id={clip_id})"
        if not cells["path"]:
            errors.append("empty path")
        if clip_id in seen_ids:
            errors.append(f"duplicate id {clip_id!r} (first at row {seen_ids[clip_id]})")
        else:
            seen_ids[clip_id] = number
        if not cells["label"]:
            errors.append("empty label")
        elif labels is not None and cells["label"] not in labels:
            errors.append(f"unknown label {cells['label']!r}; expected one of {list(labels)}")
        if not cells["speaker"]:
            errors.append("empty speaker")
        elif not cells["gender"]:
            errors.append(f"speaker {cells['speaker']!r} has no gender")
        else:
            speaker_genders.setdefault(cells["speaker"], {}).setdefault(cells["gender"], []).append(number)
        audio = Path(cells["path"]) if cells["path"] else None
        if audio is not None and not audio.is_absolute():
            audio = manifest.parent / audio
        audio_path = os.path.normpath(str(audio)) if audio is not None else ""
        if audio is not None and not Path(audio_path).is_file():
            errors.append(f"no such file: {audio_path}")
        if errors:
            problems.append((culprit, "; ".join(errors)))
            continue
        pending.append((number, culprit, audio_path, {
            "clip_id": clip_id, "speaker": cells["speaker"], "gender": cells["gender"], "label": cells["label"],
            "sentence": cells["sentence"] or None, "start_s": segment[0], "end_s": segment[1], "split": split,
        }))
    return problems, pending, speaker_genders


def split_problems(pending: Sequence[PendingRow], manifest_name: str) -> list[tuple[str, str]]:
    """A given split must keep every speaker in one subset: the analyses are speaker-independent."""
    subsets: dict[str, dict[str, list[int]]] = {}
    for number, _, _, fields in pending:
        if fields["split"] is not None:
            subsets.setdefault(fields["speaker"], {}).setdefault(fields["split"], []).append(number)
    return [(f"{manifest_name} speaker {speaker!r}",
             "is in more than one split: " + ", ".join(f"{split} (rows {', '.join(map(str, rows[:5]))}"
                                                       f"{', ...' if len(rows) > 5 else ''})"
                                                       for split, rows in sorted(by_split.items())))
            for speaker, by_split in sorted(subsets.items()) if len(by_split) > 1]
