"""RAVDESS (Livingstone & Russo, 2018): labels, speakers and genders from its file names.

Every file is ``MM-VV-EE-II-SS-RR-AA.wav``: modality (``03`` audio-only), vocal channel (``01``
speech, ``02`` song), emotion, intensity (``01`` normal, ``02`` strong), statement, repetition and
actor (``01``-``24``; odd actors are male, even female). Emotions map to CREMA-D's codes, so the
study's defaults apply; calm and surprised have no CREMA-D counterpart and are left out unless
``all_emotions`` keeps them (as ``CAL`` and ``SUR``; then set ``dataset.labels`` to the eight).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from serlens.shared.errors import InvalidInputError
from serlens.shared.importers import ImportResult, write_manifest_csv

RAVDESS_NAME = re.compile(r"^(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})-"
                          r"(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})$")

#: RAVDESS emotion code -> serlens label (CREMA-D's codes where CREMA-D has the emotion).
RAVDESS_EMOTIONS = {"01": "NEU", "02": "CAL", "03": "HAP", "04": "SAD", "05": "ANG", "06": "FEA", "07": "DIS",
                    "08": "SUR"}
#: The two RAVDESS emotions CREMA-D lacks (left out by default).
EXTRA_EMOTIONS = {"CAL": "calm", "SUR": "surprised"}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
CHANNELS = {"01": "speech", "02": "song"}


def _parse(file: Path) -> tuple[dict[str, str] | None, str | None]:
    """``(manifest row, None)`` or ``(None, reason)`` for one file."""
    match = RAVDESS_NAME.match(file.stem)
    if match is None:
        return None, "file name is not MM-VV-EE-II-SS-RR-AA (seven two-digit RAVDESS codes)"
    codes = match.groupdict()
    wrong = [f"{name} {codes[name]!r} (expected one of {sorted(known)})" for name, known in (
        ("modality", {"03"}), ("channel", CHANNELS), ("emotion", RAVDESS_EMOTIONS), ("intensity", {"01", "02"}),
        ("statement", RAVDESS_STATEMENTS), ("repetition", {"01", "02"})) if codes[name] not in known]
    if not 1 <= int(codes["actor"]) <= 24:
        wrong.append(f"actor {codes['actor']!r} (expected 01-24)")
    if wrong:
        return None, "unknown code(s): " + "; ".join(wrong)
    return {"path": str(file), "id": file.stem, "label": RAVDESS_EMOTIONS[codes["emotion"]],
            "speaker": f"Actor_{codes['actor']}", "gender": "M" if int(codes["actor"]) % 2 else "F",
            "sentence": RAVDESS_STATEMENTS[codes["statement"]], "channel": CHANNELS[codes["channel"]]}, None


def import_ravdess(folder: str | os.PathLike[str], out: str | os.PathLike[str], *, all_emotions: bool = False,
                   include_song: bool = False) -> ImportResult:
    """Write a manifest of a RAVDESS folder (``Actor_NN/*.wav``, or the files in any layout under it).

    Args:
        folder: the corpus root; every ``*.wav`` under it is read.
        out: the folder the manifest goes to (the audio stays where it is).
        all_emotions: keep calm (``CAL``) and surprised (``SUR``) too.
        include_song: keep the song recordings (vocal channel ``02``) too.

    Raises:
        InvalidInputError: no WAV file, or files whose names are not RAVDESS codes (every one
            named); nothing is written then.
    """
    root = Path(folder).absolute()
    files = sorted(root.rglob("*.wav"))
    if not files:
        raise InvalidInputError([(str(root), "holds no .wav file (expected RAVDESS's Actor_NN/*.wav)")],
                                   source="RAVDESS import")
    rows, problems, left_out = [], [], Counter[str]()
    for file in files:
        row, reason = _parse(file)
        if row is None:
            problems.append((str(file), reason or ""))
        elif row["channel"] == "song" and not include_song:
            left_out["song (vocal channel 02; --include-song keeps it)"] += 1
        elif row["label"] in EXTRA_EMOTIONS and not all_emotions:
            left_out[f"{EXTRA_EMOTIONS[row['label']]} (no CREMA-D counterpart; --all-emotions keeps it)"] += 1
        else:
            rows.append(row)
    if problems:
        raise InvalidInputError(problems, source=f"RAVDESS import of {root}")
    return write_manifest_csv(out, rows, left_out)
