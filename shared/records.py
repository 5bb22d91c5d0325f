"""The records serlens passes around (one frozen dataclass each, units in the names) and ``TableSpec``.

``serlens.shared.schema`` holds the tables these become; it re-exports the records, so callers
import both from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


@dataclass(frozen=True)
class ClipRecord:
    """One audio clip of a dataset, as found on disk (before normalisation).

    Attributes:
        clip_id: unique within the dataset (CREMA-D: the file stem).
        dataset: dataset name, e.g. ``crema-d``, ``demo``, ``api``.
        source_path: absolute path of the source file.
        audio_sha256: SHA-256 of the source file's bytes (a segment's: of the file's hash and its
            bounds, see ``serlens.shared.datasets.inspect_segment``).
        speaker: speaker id.
        gender: ``F`` or ``M`` (or another label the dataset uses).
        label: class label (for SER: one of ``EMOTIONS``).
        duration_s: duration in seconds (of the segment, for a segment).
        sampling_rate: sampling rate of the source file in Hz.
        num_channels: channel count of the source file.
        sentence: what was said (CREMA-D: the sentence code of the file name, e.g. ``DFA``);
            None when the dataset does not say. A confound for partial CKA.
        start_s: where the clip starts in the source file, in seconds (None: at its start).
        end_s: where it ends, in seconds (None: at the file's end).
        split: the subset the manifest gives (``train``, ``validation``, ``analysis``); None
            when serlens' speaker-independent split decides.
    """

    clip_id: str
    dataset: str
    source_path: str
    audio_sha256: str
    speaker: str
    gender: str
    label: str
    duration_s: float
    sampling_rate: int
    num_channels: int = 1
    sentence: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    split: str | None = None


@dataclass(frozen=True)
class LoudnessRecord:
    """What loudness normalisation did to one clip.

    Attributes:
        lufs_before: integrated loudness of the input in LUFS (``-inf`` for silence).
        lufs_after: integrated loudness of the output in LUFS.
        gain_db: gain applied, in dB.
        peak_dbfs: sample peak of the output in dBFS.
        clipped_fraction: fraction of samples that the plain gain would have pushed
            outside [-1, 1] (0 when nothing had to be limited).
        policy: what was done: ``normalized``, ``limited``, ``clipped``, ``short_tiled``,
            ``silence_passthrough``.
    """

    lufs_before: float
    lufs_after: float
    gain_db: float
    peak_dbfs: float
    clipped_fraction: float
    policy: str

    def as_columns(self) -> dict[str, float | str]:
        """The record as the ``clips`` table's loudness columns."""
        return {"lufs_before": self.lufs_before, "lufs_after": self.lufs_after, "gain_db": self.gain_db,
                "peak_dbfs": self.peak_dbfs, "clipped_fraction": self.clipped_fraction,
                "loudness_policy": self.policy}


@dataclass(frozen=True)
class SkipRecord:
    """An input item left out of a run, and why."""

    item: str
    stage: str
    reason: str


@dataclass(frozen=True)
class TableSpec:
    """A feature-store table: its schema, join keys and partition columns.

    Attributes:
        name: table (and view) name.
        schema: the pyarrow schema of every Parquet file of the table.
        keys: columns that identify a row; the view keeps the newest row per key,
            so re-running a stage never shows duplicates.
        partition_by: columns whose values name the folders the files go in.
        array_column: a list column whose rows share one length within a file (a vector per
            row): stored as fixed-size arrays, and an ARRAY column in the SQL views.
    """

    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    description: str = ""
    array_column: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
