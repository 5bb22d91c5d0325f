"""Signal and file builders for the tests of every service (generated audio, no fixture files)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from serlens.shared import settings
from serlens.shared.audio import TARGET_SAMPLING_RATE, wav_bytes
from serlens.shared.demo_voice import Speaker, VoiceProfile, synthesize


def sine(
    frequency_hz: float,
    duration_s: float,
    *,
    sampling_rate: int = TARGET_SAMPLING_RATE,
    amplitude: float = 0.1,
) -> np.ndarray:
    """Return a pure tone as float32.

    Args:
        frequency_hz: tone frequency in Hz.
        duration_s: length in seconds.
        sampling_rate: in Hz.
        amplitude: peak amplitude (linear, full scale = 1).
    """
    time_s = np.arange(int(round(duration_s * sampling_rate))) / sampling_rate
    return (amplitude * np.sin(2.0 * np.pi * frequency_hz * time_s)).astype(np.float32)


def voiced(
    duration_s: float,
    *,
    f0_hz: float = 150.0,
    sampling_rate: int = TARGET_SAMPLING_RATE,
    seed: int = 0,
) -> np.ndarray:
    """Return a speech-like voiced signal (the demo synthesiser, neutral voice) as float32.

    Exactly ``duration_s`` long (syllables are repeated or cut to fit), peak about -6 dBFS.

    Args:
        duration_s: length in seconds.
        f0_hz: the speaker's habitual F0 in Hz.
        sampling_rate: in Hz.
        seed: random seed (same seed, same samples).
    """
    rng = np.random.default_rng([seed, int(f0_hz * 1000)])
    speaker = Speaker(
        actor_id=0,
        sex="Male" if f0_hz < 160 else "Female",
        age=30,
        f0_hz=f0_hz,
        range_scale=1.0,
        formant_scale=1.0 if f0_hz < 160 else 1.15,
        syllable_rate=4.5,
        level_db=0.0,
        jitter_scale=1.0,
        tilt_offset=0.0,
        open_quotient_offset=0.0,
    )
    profile = VoiceProfile(1.0, 3.0, 0.0, 1.0, 0.01, 0.05, 0.8, 0.6, 0.03, 1.0)
    num_samples = int(round(duration_s * sampling_rate))
    pieces, total = [], 0
    while total < num_samples:
        piece = synthesize(
            profile,
            speaker,
            rng,
            num_syllables=10,
            vowels=rng.integers(0, 6, 10),
            sampling_rate=sampling_rate,
        )
        pieces.append(piece)
        total += len(piece)
    signal = np.concatenate(pieces)[:num_samples]
    return (0.5 * signal / (np.max(np.abs(signal)) + 1e-12)).astype(np.float32)


def write_bad_audio(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write one file per way audio can be unusable.

    Args:
        folder: where to write (created).

    Returns:
        Paths by case: ``empty`` (0 bytes), ``truncated`` (WAV whose data chunk is cut short),
        ``not_audio`` (a text file named .wav), ``nan`` (float WAV holding NaN),
        ``too_short`` (0.2 s), ``silence`` (1 s of digital zeros).
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        name: root / f"{name}.wav"
        for name in ("empty", "truncated", "not_audio", "nan", "too_short", "silence")
    }
    paths["empty"].write_bytes(b"")
    whole = wav_bytes(voiced(1.0), TARGET_SAMPLING_RATE, subtype="PCM_16")
    paths["truncated"].write_bytes(whole[: len(whole) // 2])
    paths["not_audio"].write_text("this is a text file, not a RIFF/WAVE file\n")
    with_nan = voiced(1.0)
    with_nan[1000:1010] = np.nan
    sf.write(str(paths["nan"]), with_nan, TARGET_SAMPLING_RATE, subtype="FLOAT", format="WAV")
    sf.write(
        str(paths["too_short"]), voiced(0.2), TARGET_SAMPLING_RATE, subtype="PCM_16", format="WAV"
    )
    sf.write(
        str(paths["silence"]),
        np.zeros(TARGET_SAMPLING_RATE, dtype=np.float32),
        TARGET_SAMPLING_RATE,
        subtype="PCM_16",
        format="WAV",
    )
    return paths


def write_manifest(
    folder: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    name: str = "manifest.csv",
) -> Path:
    """Write rows as a CSV manifest (columns: the union of the rows' keys, first-seen order).

    Args:
        folder: where to write (created).
        rows: one mapping per clip, e.g. ``{"path": ..., "label": ..., "speaker": ...,
            "gender": ...}``; a missing key is written as an empty cell.
        name: file name.

    Returns:
        The manifest's path.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    path = root / name
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(
            {key: "" if value is None else value for key, value in row.items()} for row in rows
        )
    return path


def shared_data_dir() -> Path | None:
    """Return the project's shared reference folder (CREMA-D metadata, ...), or None.

    ``$SERLENS_SHARED`` if set, else the ``shared`` folder next to the repository root.
    """
    folder = settings.reference_folder() or Path(__file__).resolve().parents[1].parent / "shared"
    return folder if folder.is_dir() else None


def crema_d_metadata() -> tuple[list[tuple[str, float]], dict[str, dict[str, str]]] | None:
    """CREMA-D's real file names with durations, and its speaker table, or None when absent.

    Returns:
        ``([(file_name, duration_s), ...], {ActorID: {"Age", "Sex", "Race", "Ethnicity"}})``
        from ``<shared>/crema-d/clips.csv`` and ``VideoDemographics.csv``.
    """
    root = shared_data_dir()
    folder = root / "crema-d" if root else None
    if (
        folder is None
        or not (folder / "clips.csv").is_file()
        or not (folder / "VideoDemographics.csv").is_file()
    ):
        return None
    with open(folder / "clips.csv", newline="") as fh:
        files = [(row["file"], float(row["duration_s"])) for row in csv.DictReader(fh)]
    with open(folder / "VideoDemographics.csv", newline="") as fh:
        actors = {
            row["ActorID"]: {k: v for k, v in row.items() if k != "ActorID"}
            for row in csv.DictReader(fh)
        }
    return files, actors
