"""RAVDESS file-name codes become a manifest serlens reads: actors, genders, emotions, statements."""

from __future__ import annotations

import pytest
import soundfile as sf

from serlens.pipeline.cli import main
from serlens.shared.datasets import scan_manifest
from serlens.shared.errors import InvalidInputError
from serlens.shared.importers.ravdess import import_ravdess
from serlens.shared.schema import EMOTIONS
from serlens.shared.testing import voiced

#: (emotion code, statement) per file of each actor; 02 = calm, 08 = surprised.
CODES = [("01", "01"), ("03", "02"), ("04", "01"), ("05", "02"), ("06", "01"), ("07", "02"), ("02", "01"),
         ("08", "02")]


def _corpus(root, actors=(1, 2, 3, 4), song=False):
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, (emotion, statement) in enumerate(CODES):
            name = f"03-01-{emotion}-0{1 + i % 2}-{statement}-01-{actor:02d}.wav"
            signal = voiced(0.6, sampling_rate=48_000, seed=actor * 10 + i)
            sf.write(str(folder / name), signal, 48_000, subtype="PCM_16")
        if song:
            sf.write(str(folder / f"03-02-03-01-01-01-{actor:02d}.wav"), voiced(0.6, seed=actor), 48_000)
    return root


def test_codes_become_speakers_genders_labels_and_sentences(tmp_path):
    root = _corpus(tmp_path / "ravdess", song=True)
    result = import_ravdess(root, tmp_path / "out")
    assert result.rows == 4 * 6 and set(result.labels) == set(EMOTIONS)
    assert result.left_out == {"calm (no CREMA-D counterpart; --all-emotions keeps it)": 4,
                               "surprised (no CREMA-D counterpart; --all-emotions keeps it)": 4,
                               "song (vocal channel 02; --include-song keeps it)": 4}
    scan = scan_manifest(result.manifest, labels=EMOTIONS)
    assert scan.problems == () and len(scan.clips) == 24
    by_id = {c.clip_id: c for c in scan.clips}
    clip = by_id["03-01-05-02-02-01-03"]  # angry, strong, "Dogs...", actor 3
    assert (clip.label, clip.speaker, clip.gender, clip.sentence) == ("ANG", "Actor_03", "M",
                                                                     "Dogs are sitting by the door")
    assert by_id["03-01-01-01-01-01-04"].gender == "F" and by_id["03-01-01-01-01-01-04"].label == "NEU"
    assert clip.sampling_rate == 48_000


def test_all_emotions_keeps_calm_and_surprised(tmp_path):
    result = import_ravdess(_corpus(tmp_path / "ravdess", actors=(1, 2)), tmp_path / "out", all_emotions=True)
    assert result.rows == 16 and result.labels["CAL"] == 2 and result.labels["SUR"] == 2 and not result.left_out


def test_names_that_are_not_ravdess_codes_are_named_and_nothing_is_written(tmp_path):
    root = _corpus(tmp_path / "ravdess", actors=(1,))
    for bad in ("notes.wav", "03-01-09-01-01-01-01.wav", "01-01-03-01-01-01-30.wav"):
        sf.write(str(root / "Actor_01" / bad), voiced(0.6), 16_000)
    with pytest.raises(InvalidInputError) as caught:
        import_ravdess(root, tmp_path / "out")
    message = str(caught.value)
    assert "notes.wav: file name is not MM-VV-EE-II-SS-RR-AA" in message
    assert "03-01-09-01-01-01-01.wav: unknown code(s): emotion '09'" in message
    assert "01-01-03-01-01-01-30.wav: unknown code(s): modality '01' (expected one of ['03']); actor '30'" in message
    assert not (tmp_path / "out").exists()


def test_the_command_prints_what_it_wrote_and_how_to_run_it(tmp_path, capsys):
    root = _corpus(tmp_path / "ravdess", actors=(1, 2))
    assert main(["import", "ravdess", str(root), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 12 clip(s) to {tmp_path / 'out' / 'manifest.csv'}" in printed
    assert "--set dataset.kind=manifest" in printed
    assert main(["import", "ravdess", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")]) == 2
    assert "holds no .wav file" in capsys.readouterr().err
