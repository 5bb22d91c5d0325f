"""Ways into serlens: a CREMA-D folder, or a manifest (CSV or Parquet) of any audio.

Both return a ``DatasetScan``: the valid ``ClipRecord``s and every problem found, as
``(culprit, reason)`` pairs. ``DatasetScan.raise_for_problems`` reports them all at once;
a pipeline run with ``--skip-invalid`` records them instead. Each file is decoded and
checked by ``inspect_audio``, a module-level function that the caller's ``map_fn`` may run
in parallel (the pipeline passes a Ray-backed map).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

from serlens.shared.audio import check_signal, decode, sha256_file
from serlens.shared.errors import InvalidManifestError, ServiceError
from serlens.shared.schema import EMOTIONS, ClipRecord

#: ``map_fn(inspect_audio, paths)``: the builtin ``map``, or a parallel one with the same call.
MapFn = Callable[[Callable[[str], Any], Iterable[str]], Iterable[Any]]

#: CREMA-D file names: ``<ActorID>_<Sentence>_<Emotion>_<Level>.wav``.
CREMA_D_NAME = re.compile(
    r"^(?P<actor>\d+)_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$"
)
CREMA_D_SEX = {"Male": "M", "Female": "F"}
CREMA_D_DEMOGRAPHICS = "VideoDemographics.csv"
CREMA_D_AUDIO = "AudioWAV"

MANIFEST_REQUIRED = ("path", "label", "speaker", "gender")


@dataclass(frozen=True)
class DatasetScan:
    """What a dataset scan found.

    Attributes:
        clips: valid clips, in file-name order (CREMA-D) or manifest order.
        problems: ``(culprit, reason)`` per invalid file or row; culprit is a file path or
            ``"<manifest> row N (id=...)"``, N counting data rows from 1.
        source: what was scanned (folder or manifest path), for messages.
        labels: the accepted labels (None: any).
    """

    clips: tuple[ClipRecord, ...]
    problems: tuple[tuple[str, str], ...]
    source: str = "dataset"
    labels: tuple[str, ...] | None = None

    def raise_for_problems(self) -> None:
        """Raise if anything was invalid.

        Every problem is named, except that more than a few rows whose only fault is a label
        outside the label set are summarised in one paragraph (the labels found with their counts and the setting that
        fixes it): a dataset with another label set would otherwise give one line per row.

        Raises:
            InvalidManifestError: listing every problem, not only the first.
        """
        if not self.problems:
            return
        unknown = Counter(m["label"] for _, reason in self.problems if (m := _UNKNOWN_LABEL.match(reason)))
        if sum(unknown.values()) <= _LIST_AT_MOST:
            raise InvalidManifestError(self.problems, source=self.source)
        listed = [(c, r) for c, r in self.problems if not _UNKNOWN_LABEL.match(r)]
        if unknown:
            listed.append(("labels", _label_summary(unknown, self.labels or (), len(self.clips))))
        raise InvalidManifestError(listed, source=self.source)


#: How a row with a label outside the label set is reported (one reason per row, for `skipped`).
_UNKNOWN_LABEL = re.compile(r"^unknown (?:label|emotion code) '(?P<label>[^']*)'; expected one of \[[^\]]*\]$")
#: Up to this many rows with unknown labels are listed one by one; more are summarised.
_LIST_AT_MOST = 5


def _label_summary(unknown: Counter[str], labels: Sequence[str], valid: int) -> str:
    found = ", ".join(f"{label} ({n})" for label, n in unknown.most_common())
    rows = sum(unknown.values())
    every = sorted(set(unknown) | set(labels)) if valid else sorted(unknown)
    return (f"{rows} clip(s) carry labels outside dataset.labels {list(labels)}: {found}. "
            f"If these are the data's classes, set the label set in index order, e.g. "
            f"--set 'dataset.labels=[{', '.join(every)}]'; --skip-invalid would leave out all {rows} of them.")


def inspect_audio(path: str) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """Decode and check one file; never raises for bad audio.

    Args:
        path: the file.

    Returns:
        ``({"duration_s", "sampling_rate", "num_channels", "audio_sha256"}, None)`` for usable
        audio (rate and channels of the source file, duration in seconds), else
        ``(None, reason)``: empty, truncated, not audio, NaN, shorter than 400 ms, silence.
    """
    try:
        decoded = decode(path, name=path)
        check_signal(decoded.signal, decoded.sampling_rate, name=path)
        info = sf.info(path)
    except ServiceError as err:
        return None, _strip_prefix(str(err), path)
    except (OSError, RuntimeError) as err:
        return None, f"unreadable: {err}"
    return {
        "duration_s": float(info.frames) / float(info.samplerate),
        "sampling_rate": int(info.samplerate),
        "num_channels": int(info.channels),
        "audio_sha256": sha256_file(path),
    }, None


def _strip_prefix(message: str, path: str) -> str:
    """Errors from serlens.shared.audio start with the file name; the culprit already says it."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _inspect_all(
    candidates: Sequence[tuple[str, str, dict[str, Any]]],
    map_fn: MapFn,
    dataset: str,
) -> tuple[list[ClipRecord], list[tuple[str, str]]]:
    """Run ``inspect_audio`` over ``(culprit, path, fields)`` and build the records."""
    results = list(map_fn(inspect_audio, [path for _, path, _ in candidates]))
    clips, problems = [], []
    for (culprit, path, fields), (info, reason) in zip(candidates, results, strict=True):
        if info is None:
            problems.append((culprit, reason if culprit == path else f"{path}: {reason}"))
            continue
        clips.append(ClipRecord(dataset=dataset, source_path=path, **fields, **info))
    return clips, problems


def _read_demographics(path: Path) -> tuple[dict[str, str | None], list[tuple[str, str]]]:
    """ActorID -> "F"/"M" (None when Sex is empty), and problems with the file itself."""
    genders: dict[str, str | None] = {}
    problems: list[tuple[str, str]] = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("ActorID", "Sex") if c not in (reader.fieldnames or [])]
        if missing:
            return {}, [(str(path), f"missing column(s) {missing}; found {reader.fieldnames}")]
        for line, row in enumerate(reader, start=2):
            actor, sex = (row["ActorID"] or "").strip(), (row["Sex"] or "").strip()
            if not sex:
                genders[actor] = None
            elif sex in CREMA_D_SEX:
                genders[actor] = CREMA_D_SEX[sex]
            else:
                problems.append(
                    (
                        f"{path} line {line}",
                        f"Sex {sex!r} of actor {actor} is not one of {sorted(CREMA_D_SEX)}",
                    )
                )
                genders[actor] = None
    return genders, problems


def scan_crema_d(
    folder: str | os.PathLike[str],
    *,
    dataset: str = "crema-d",
    labels: Sequence[str] = EMOTIONS,
    map_fn: MapFn = map,
) -> DatasetScan:
    """Scan a CREMA-D folder: ``AudioWAV/*.wav`` and ``VideoDemographics.csv``.

    The label is the file name's third field, the speaker its ActorID, the gender the
    actor's Sex in the CSV (``Male`` -> ``M``, ``Female`` -> ``F``).

    Args:
        folder: the corpus root (or the demo corpus from ``serlens.shared.demo_corpus``).
        dataset: name stored in every record.
        labels: emotion codes accepted.
        map_fn: how to run ``inspect_audio`` over the files (``map`` or a parallel map).

    Returns:
        The scan; a missing CSV or audio folder is a problem, not an exception.
    """
    root = Path(folder).absolute()
    csv_path, audio_dir = root / CREMA_D_DEMOGRAPHICS, root / CREMA_D_AUDIO
    source = str(root)
    if not csv_path.is_file():
        return DatasetScan(
            (), ((str(csv_path), "missing: CREMA-D's speaker table is needed for genders"),), source
        )
    if not audio_dir.is_dir():
        return DatasetScan((), ((str(audio_dir), "missing: no AudioWAV folder"),), source)
    genders, problems = _read_demographics(csv_path)
    files = sorted(audio_dir.glob("*.wav"))
    if not files:
        problems.append((str(audio_dir), "holds no .wav file"))
    candidates = []
    for file in files:
        path = str(file)
        match = CREMA_D_NAME.match(file.stem)
        if match is None:
            problems.append((path, "file name is not <ActorID>_<Sentence>_<Emotion>_<Level>.wav"))
            continue
        actor, emotion = match["actor"], match["emotion"]
        if emotion not in labels:
            problems.append(
                (path, f"unknown emotion code {emotion!r}; expected one of {list(labels)}")
            )
            continue
        if actor not in genders:
            problems.append((path, f"actor {actor} is not in {CREMA_D_DEMOGRAPHICS}"))
            continue
        gender = genders[actor]
        if gender is None:
            problems.append(
                (path, f"speaker {actor} has no gender (Sex) in {CREMA_D_DEMOGRAPHICS}")
            )
            continue
        candidates.append(
            (
                path,
                path,
                {"clip_id": file.stem, "speaker": actor, "gender": gender, "label": emotion,
                 "sentence": match["sentence"]},
            )
        )
    clips, audio_problems = _inspect_all(candidates, map_fn, dataset)
    return DatasetScan(tuple(clips), tuple(problems + audio_problems), source,
                       tuple(labels) if labels is not None else None)


def _cell(value: Any) -> str:
    """Return a manifest cell as a stripped string; None, NaN and empty become ``""``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _read_manifest_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of a CSV or Parquet manifest.

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


def _check_rows(
    rows: Iterable[Mapping[str, Any]], manifest: Path, labels: Sequence[str] | None
) -> tuple[list[tuple[str, str]], list[tuple[int, str, str, dict[str, Any]]], dict[str, dict[str, list[int]]]]:
    """Check each manifest row on its own: ``(problems, rows to inspect, speaker -> gender -> rows)``."""
    name = manifest.name
    problems: list[tuple[str, str]] = []
    seen_ids: dict[str, int] = {}
    speaker_genders: dict[str, dict[str, list[int]]] = {}
    pending: list[tuple[int, str, str, dict[str, Any]]] = []
    for number, row in enumerate(rows, start=1):
        cells = {key: _cell(row.get(key)) for key in (*MANIFEST_REQUIRED, "id", "sentence")}
        clip_id = cells["id"] or Path(cells["path"]).stem
        culprit = f"{name} row {number} (id={clip_id})"
        errors = []
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
            speaker_genders.setdefault(cells["speaker"], {}).setdefault(cells["gender"], []).append(
                number
            )
        audio = Path(cells["path"]) if cells["path"] else None
        if audio is not None and not audio.is_absolute():
            audio = manifest.parent / audio
        audio_path = os.path.normpath(str(audio)) if audio is not None else ""
        if audio is not None and not Path(audio_path).is_file():
            errors.append(f"no such file: {audio_path}")
        if errors:
            problems.append((culprit, "; ".join(errors)))
            continue
        fields = {
            "clip_id": clip_id,
            "speaker": cells["speaker"],
            "gender": cells["gender"],
            "label": cells["label"],
            "sentence": cells["sentence"] or None,
        }
        pending.append((number, culprit, audio_path, fields))
    return problems, pending, speaker_genders


def scan_manifest(
    path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    labels: Sequence[str] | None = None,
    map_fn: MapFn = map,
) -> DatasetScan:
    """Scan a manifest: columns ``path, label, speaker, gender`` and optionally ``id``, ``sentence``.

    Relative paths are relative to the manifest's folder; audio may have any sampling
    rate and channel count (it is converted to 16 kHz mono later by ``serlens.shared.audio.decode``).
    A row without ``id`` gets its path's stem.

    Args:
        path: a ``.csv`` (or ``.tsv``) or ``.parquet`` file.
        dataset: name stored in every record (default: the manifest's stem).
        labels: accepted labels (None: any non-empty label).
        map_fn: how to run ``inspect_audio`` over the files.

    Returns:
        The scan; problems are a missing manifest or column, a missing file, an unknown label,
        a duplicate id, a speaker without gender, a speaker with two genders, unusable audio.
    """
    manifest = Path(path).absolute()
    source, name = str(manifest), manifest.name
    if not manifest.is_file():
        return DatasetScan((), ((source, "no such manifest file"),), source)
    try:
        columns, rows = _read_manifest_rows(manifest)
    except (ValueError, OSError, csv.Error) as err:  # pyarrow's ArrowInvalid is a ValueError
        return DatasetScan((), ((source, f"unreadable manifest: {err}"),), source)
    missing = [c for c in MANIFEST_REQUIRED if c not in columns]
    if missing:
        return DatasetScan(
            (), ((source, f"missing required column(s) {missing}; found {columns}"),), source
        )
    dataset = dataset or manifest.stem
    problems, pending, speaker_genders = _check_rows(rows, manifest, labels)
    conflicted = {
        spk: by_gender for spk, by_gender in speaker_genders.items() if len(by_gender) > 1
    }
    for speaker, by_gender in sorted(conflicted.items()):
        detail = ", ".join(
            f"{g} (rows {', '.join(map(str, nums))})" for g, nums in sorted(by_gender.items())
        )
        problems.append((f"{name} speaker {speaker!r}", f"has two or more genders: {detail}"))
    candidates = [
        (culprit, audio_path, fields)
        for _, culprit, audio_path, fields in pending
        if fields["speaker"] not in conflicted
    ]
    clips, audio_problems = _inspect_all(candidates, map_fn, dataset)
    return DatasetScan(tuple(clips), tuple(problems + audio_problems), source,
                       tuple(labels) if labels is not None else None)
