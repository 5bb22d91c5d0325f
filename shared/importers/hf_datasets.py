"""A Hugging Face ``datasets`` audio dataset saved with ``save_to_disk``, as a serlens manifest.

The audio column is read without decoding (``Audio(decode=False)``): embedded bytes are written
unchanged under ``<out>/audio/`` (serlens decodes them later, through its bounded decoder), files
the dataset only points to are referenced where they are, and an ``{"array", "sampling_rate"}``
column is written as float WAV. Class-label columns give their names, not their indices. A
``DatasetDict``'s splits are all imported; with ``use_splits`` they become the manifest's
``split`` column (``train``; ``validation``, ``valid`` or ``dev``; ``test`` -> ``analysis``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serlens.shared.audio import write_wav
from serlens.shared.errors import InvalidConfigError, InvalidInputError
from serlens.shared.importers import ImportResult, write_manifest_csv

#: A ``DatasetDict`` split name -> the manifest's ``split`` value (with ``use_splits``).
HF_SPLITS = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
             "test": "analysis"}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
GENDERS = {"male": "M", "m": "M", "female": "F", "f": "F"}


@dataclass(frozen=True)
class HfColumns:
    """Which columns of the dataset hold what (``None``: the dataset has no such column)."""

    audio: str = "audio"
    label: str = "label"
    speaker: str = "speaker_id"
    gender: str = "gender"
    sentence: str | None = None
    id: str | None = None


def _load(path: Path) -> dict[str, Any]:
    """Split name -> ``Dataset`` (a lone ``Dataset`` is split ``""``).

    Raises:
        InvalidConfigError: not a ``save_to_disk`` folder, or ``datasets`` is not installed.
    """
    try:
        import datasets
    except ImportError as err:
        raise InvalidConfigError("serlens import hf-datasets needs the `datasets` package: "
                                 "pip install 'serlens[hf]'") from err
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise InvalidConfigError(f"{path}: not a dataset written by save_to_disk ({err})") from err
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"": loaded}


def _check_columns(splits: Mapping[str, Any], columns: HfColumns, use_splits: bool) -> list[tuple[str, str]]:
    wanted = [c for c in (columns.audio, columns.label, columns.speaker, columns.gender, columns.sentence, columns.id)
              if c]
    problems = []
    for name, ds in splits.items():
        missing = [c for c in wanted if c not in ds.column_names]
        if missing:
            problems.append((f"split {name!r}" if name else "dataset",
                             f"no column(s) {missing}; it has {ds.column_names} (choose them with --*-column)"))
        if use_splits and name not in HF_SPLITS:
            problems.append((f"split {name!r}", f"--use-splits maps only {sorted(HF_SPLITS)}"))
    return problems


def _name(feature: Any, value: Any) -> str:
    """A cell as text; a class label's name instead of its index."""
    if value is None:
        return ""
    names = getattr(feature, "names", None)
    return str(names[value]) if names is not None and isinstance(value, int) else str(value).strip()


def _row_problem(cells: Mapping[str, str], audio: Any) -> str | None:
    """Why a row cannot be imported (empty cells, no audio), or None."""
    empty = [key for key in ("label", "speaker", "gender") if not cells[key]]
    if empty:
        return f"empty {', '.join(empty)}"
    if not isinstance(audio, Mapping):
        return "no audio"
    if audio.get("array") is None and not audio.get("bytes"):
        where = audio.get("path")
        if not where or not Path(where).is_file():
            return f"audio neither embedded nor found on disk: {where or '(no path)'}"
    return None


def _audio(cell: Any, target: Path) -> str:
    """Write or reference one audio cell; returns the path for the manifest."""
    if isinstance(cell, Mapping) and cell.get("array") is not None:
        write_wav(target.with_suffix(".wav"), np.asarray(cell["array"], dtype=np.float32), int(cell["sampling_rate"]))
        return str(target.with_suffix(".wav"))
    if isinstance(cell, Mapping) and cell.get("bytes"):
        suffix = Path(cell.get("path") or "").suffix.lower()
        out = target.with_suffix(suffix if suffix in AUDIO_SUFFIXES else ".wav")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(cell["bytes"])
        return str(out)
    return str(Path(cell["path"]).absolute())


def import_hf_dataset(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                      columns: HfColumns | None = None, use_splits: bool = False) -> ImportResult:
    """Write a manifest (and the embedded audio) of a ``save_to_disk`` folder.

    Args:
        path: the folder ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` wrote.
        out: where ``manifest.csv`` and ``audio/`` go.
        columns: the dataset's column names (default ``HfColumns()``).
        use_splits: turn a ``DatasetDict``'s split names into the manifest's ``split`` column.

    Raises:
        InvalidConfigError: not a dataset folder, or ``datasets`` missing.
        InvalidInputError: missing columns, unmappable splits, rows without audio, label,
            speaker or gender (every one named); nothing is written then.
    """
    import datasets

    columns = columns or HfColumns()
    splits = _load(Path(path))
    problems = _check_columns(splits, columns, use_splits)
    if problems:
        raise InvalidInputError(problems, source=f"Hugging Face dataset {path}")
    keep = [c for c in (columns.audio, columns.label, columns.speaker, columns.gender, columns.sentence, columns.id)
            if c]
    rows, audio_dir = [], Path(out).absolute() / "audio"
    for split, ds in splits.items():
        ds = ds.select_columns(keep)
        if isinstance(ds.features[columns.audio], datasets.Audio):
            ds = ds.cast_column(columns.audio, datasets.Audio(decode=False))
        features = ds.features
        for index, item in enumerate(ds):
            cells = {key: _name(features[col], item[col]) for key, col in (
                ("label", columns.label), ("speaker", columns.speaker), ("gender", columns.gender),
                ("sentence", columns.sentence), ("id", columns.id)) if col}
            clip_id = cells.get("id") or f"{split or 'data'}-{index:06d}"
            culprit = f"split {split!r} row {index}" if split else f"row {index}"
            reason = _row_problem(cells, item[columns.audio])
            if reason:
                problems.append((f"{culprit} (id={clip_id})", reason))
                continue
            rows.append({**cells, "id": clip_id, "gender": GENDERS.get(cells["gender"].lower(), cells["gender"]),
                         "split": HF_SPLITS[split] if use_splits else None,
                         "audio": item[columns.audio], "target": audio_dir / split / clip_id})
    if problems:
        raise InvalidInputError(problems, source=f"Hugging Face dataset {path}")
    for row in rows:  # everything checked: only now is anything written
        row["path"] = _audio(row.pop("audio"), row.pop("target"))
    return write_manifest_csv(out, rows)
