"""Ways into serlens: a CREMA-D folder, or a manifest (CSV or Parquet) of any audio.

Both return a ``DatasetScan``: the valid ``ClipRecord``s and every problem found, as
``(culprit, reason)`` pairs. ``DatasetScan.raise_for_problems`` reports them all at once;
a pipeline run with ``--skip-invalid`` records them instead. Each file is decoded and
checked by ``inspect_segment``, a module-level function that the caller's ``map_fn`` may run
in parallel (the pipeline passes a Ray-backed map).
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

from serlens.shared.audio import check_signal, decode, sha256_bytes, sha256_file
from serlens.shared.errors import InvalidManifestError, ServiceError
from serlens.shared.manifest import MANIFEST_REQUIRED, check_rows, read_manifest_rows, split_problems
from serlens.shared.schema import EMOTIONS, ClipRecord

#: ``map_fn(inspect_segment, items)``: the builtin ``map``, or a parallel one with the same call.
MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]

#: CREMA-D file names: ``<ActorID>_<Sentence>_<Emotion>_<Level>.wav``.
CREMA_D_NAME = re.compile(
    r"^(?P<actor>\d+)_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$"
)
CREMA_D_SEX = {"Male": "M", "Female": "F"}
CREMA_D_DEMOGRAPHICS = "VideoDemographics.csv"
CREMA_D_AUDIO = "AudioWAV"


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
    return inspect_segment((path, None, None))


def inspect_segment(item: tuple[str, float | None, float | None]) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """``inspect_audio`` of a segment ``(path, start_s, end_s)`` (None: the file's start, its end).

    Only the segment is decoded (the same bounded decode, from a seek). A segment's
    ``audio_sha256`` is the SHA-256 of ``"<file's SHA-256>:<start_s>:<end_s>"``: each segment
    has its own identity, and it changes with the file's bytes.
    """
    path, start_s, end_s = item
    whole = start_s is None and end_s is None
    try:
        decoded = decode(path, name=path, segment=None if whole else (start_s, end_s))
        check_signal(decoded.signal, decoded.sampling_rate, name=path)
        info = sf.info(path)
    except ServiceError as err:
        return None, _strip_prefix(str(err), path)
    except (OSError, RuntimeError) as err:
        return None, f"unreadable: {err}"
    digest = sha256_file(path)
    return {
        "duration_s": float(info.frames) / float(info.samplerate) if whole else decoded.duration_s,
        "sampling_rate": int(info.samplerate),
        "num_channels": int(info.channels),
        "audio_sha256": digest if whole else sha256_bytes(f"{digest}:{start_s}:{end_s}".encode()),
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
    items = [(path, fields.get("start_s"), fields.get("end_s")) for _, path, fields in candidates]
    results = list(map_fn(inspect_segment, items))
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


def scan_manifest(
    path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    labels: Sequence[str] | None = None,
    map_fn: MapFn = map,
) -> DatasetScan:
    """Scan a manifest: columns ``path, label, speaker, gender``, optionally ``id, sentence, start, end, split``.

    The columns are described in ``serlens.shared.manifest``. Relative paths are relative to the
    manifest's folder; audio may have any sampling rate and channel count (it is converted to
    16 kHz mono later by ``serlens.shared.audio.decode``); a segment is decoded alone.

    Args:
        path: a ``.csv`` (or ``.tsv``) or ``.parquet`` file.
        dataset: name stored in every record (default: the manifest's stem).
        labels: accepted labels (None: any non-empty label).
        map_fn: how to run ``inspect_segment`` over the rows.

    Returns:
        The scan; problems are a missing manifest or column, a missing file, an unknown label,
        a duplicate id, a speaker without gender, a speaker with two genders, a bad segment or
        split value, a speaker in two given splits, unusable audio.
    """
    manifest = Path(path).absolute()
    source, name = str(manifest), manifest.name
    if not manifest.is_file():
        return DatasetScan((), ((source, "no such manifest file"),), source)
    try:
        columns, rows = read_manifest_rows(manifest)
    except (ValueError, OSError, csv.Error) as err:  # pyarrow's ArrowInvalid is a ValueError
        return DatasetScan((), ((source, f"unreadable manifest: {err}"),), source)
    missing = [c for c in MANIFEST_REQUIRED if c not in columns]
    if missing:
        return DatasetScan(
            (), ((source, f"missing required column(s) {missing}; found {columns}"),), source
        )
    dataset = dataset or manifest.stem
    problems, pending, speaker_genders = check_rows(rows, manifest, labels, columns)
    conflicted = {
        spk: by_gender for spk, by_gender in speaker_genders.items() if len(by_gender) > 1
    }
    for speaker, by_gender in sorted(conflicted.items()):
        detail = ", ".join(
            f"{g} (rows {', '.join(map(str, nums))})" for g, nums in sorted(by_gender.items())
        )
        problems.append((f"{name} speaker {speaker!r}", f"has two or more genders: {detail}"))
    problems += split_problems(pending, name)
    candidates = [
        (culprit, audio_path, fields)
        for _, culprit, audio_path, fields in pending
        if fields["speaker"] not in conflicted
    ]
    clips, audio_problems = _inspect_all(candidates, map_fn, dataset)
    return DatasetScan(tuple(clips), tuple(problems + audio_problems), source,
                       tuple(labels) if labels is not None else None)
