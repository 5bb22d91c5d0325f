import csv
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from serlens.shared.audio import sha256_file, write_wav
from serlens.shared.datasets import DatasetScan, inspect_audio, scan_crema_d, scan_manifest
from serlens.shared.errors import InvalidManifestError
from serlens.shared.schema import EMOTIONS
from serlens.shared.testing import crema_d_metadata, sine, voiced, write_bad_audio, write_manifest

BAD_REASONS = {
    "empty": "empty",
    "truncated": "truncated",
    "not_audio": "not decodable",
    "nan": "NaN",
    "too_short": "shorter than",
    "silence": "silence",
}


def _wav(path, seconds=0.6, rate=16000, channels=1, seed=0):
    signal = voiced(seconds, sampling_rate=rate, seed=seed)
    data = np.stack([signal, 0.5 * signal], axis=1) if channels == 2 else signal
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype="PCM_16")
    return path


def _crema_folder(tmp_path, names, demographics):
    for index, name in enumerate(names):
        _wav(tmp_path / "AudioWAV" / name, seed=index)
    with open(tmp_path / "VideoDemographics.csv", "w", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
        writer.writerows(demographics)
    return tmp_path


def test_inspect_audio_reports_each_bad_file_and_describes_good_ones(tmp_path):
    for case, path in write_bad_audio(tmp_path).items():
        info, reason = inspect_audio(str(path))
        assert info is None
        assert BAD_REASONS[case] in reason, (case, reason)
    good = _wav(tmp_path / "good.wav", seconds=0.75, rate=22050, channels=2)
    info, reason = inspect_audio(str(good))
    assert reason is None
    assert info == {
        "duration_s": pytest.approx(0.75, abs=1e-4),
        "sampling_rate": 22050,
        "num_channels": 2,
        "audio_sha256": sha256_file(good),
    }
    assert pickle.loads(pickle.dumps(inspect_audio)) is inspect_audio


def test_manifest_of_mixed_rates_and_channels(tmp_path):
    _wav(tmp_path / "audio" / "a.wav", seconds=1.0, rate=8000, channels=2)
    _wav(tmp_path / "audio" / "b.wav", seconds=0.5, rate=44100, channels=1)
    manifest = write_manifest(
        tmp_path,
        [
            {"path": "audio/a.wav", "label": "HAP", "speaker": "s1", "gender": "F", "id": "clip-a"},
            {
                "path": str(tmp_path / "audio" / "b.wav"),
                "label": "SAD",
                "speaker": "s2",
                "gender": "M",
                "id": "",
            },
        ],
    )
    scan = scan_manifest(manifest, labels=EMOTIONS)
    assert scan.problems == ()
    scan.raise_for_problems()
    a, b = scan.clips
    assert (a.clip_id, a.dataset, a.label, a.speaker, a.gender) == (
        "clip-a",
        "manifest",
        "HAP",
        "s1",
        "F",
    )
    assert (a.sampling_rate, a.num_channels, a.duration_s) == (8000, 2, pytest.approx(1.0))
    assert a.source_path == str(tmp_path / "audio" / "a.wav")
    assert a.audio_sha256 == sha256_file(tmp_path / "audio" / "a.wav")
    assert (b.clip_id, b.sampling_rate, b.num_channels, b.duration_s) == (
        "b",
        44100,
        1,
        pytest.approx(0.5),
    )

    table = pa.table(
        {
            "path": ["audio/a.wav", "audio/b.wav"],
            "label": ["HAP", "SAD"],
            "speaker": ["s1", "s2"],
            "gender": ["F", "M"],
        }
    )
    pq.write_table(table, tmp_path / "clips.parquet")
    with ThreadPoolExecutor(2) as pool:
        parallel = scan_manifest(tmp_path / "clips.parquet", dataset="mine", map_fn=pool.map)
    assert parallel.problems == ()
    assert [(c.clip_id, c.dataset, c.audio_sha256) for c in parallel.clips] == [
        ("a", "mine", a.audio_sha256),
        ("b", "mine", b.audio_sha256),
    ]


def test_manifest_reports_every_problem_at_once(tmp_path):
    write_bad_audio(tmp_path / "bad")
    for name in ("ok1", "ok2", "ok3", "ok4", "ok5"):
        _wav(tmp_path / f"{name}.wav")
    manifest = write_manifest(
        tmp_path,
        [
            {"path": "ok1.wav", "label": "ANG", "speaker": "s1", "gender": "F"},  # row 1: valid
            {
                "path": "gone.wav",
                "label": "ANG",
                "speaker": "s1",
                "gender": "F",
            },  # row 2: missing file
            {
                "path": "ok2.wav",
                "label": "BORED",
                "speaker": "s1",
                "gender": "F",
            },  # row 3: unknown label
            {
                "path": "ok1.wav",
                "label": "ANG",
                "speaker": "s1",
                "gender": "F",
            },  # row 4: duplicate id
            {"path": "ok3.wav", "label": "ANG", "speaker": "s2", "gender": ""},  # row 5: no gender
            {
                "path": "ok4.wav",
                "label": "ANG",
                "speaker": "s3",
                "gender": "F",
            },  # row 6: s3 two genders
            {"path": "ok5.wav", "label": "ANG", "speaker": "s3", "gender": "M"},  # row 7
            {
                "path": "bad/nan.wav",
                "label": "ANG",
                "speaker": "s1",
                "gender": "F",
            },  # row 8: NaN audio
            {
                "path": "bad/silence.wav",
                "label": "SAD",
                "speaker": "s1",
                "gender": "F",
            },  # row 9: silence
        ],
    )
    scan = scan_manifest(manifest, labels=EMOTIONS)
    assert [c.clip_id for c in scan.clips] == ["ok1"]
    problems = dict(scan.problems)
    assert len(scan.problems) == 7
    assert "no such file" in problems["manifest.csv row 2 (id=gone)"]
    assert str(tmp_path / "gone.wav") in problems["manifest.csv row 2 (id=gone)"]
    assert "unknown label 'BORED'" in problems["manifest.csv row 3 (id=ok2)"]
    assert "duplicate id 'ok1' (first at row 1)" in problems["manifest.csv row 4 (id=ok1)"]
    assert "speaker 's2' has no gender" in problems["manifest.csv row 5 (id=ok3)"]
    assert (
        "F (rows 6)" in problems["manifest.csv speaker 's3'"]
        and "M (rows 7)" in problems["manifest.csv speaker 's3'"]
    )
    assert "NaN" in problems["manifest.csv row 8 (id=nan)"]
    assert "silence" in problems["manifest.csv row 9 (id=silence)"]
    with pytest.raises(InvalidManifestError) as caught:
        scan.raise_for_problems()
    message = str(caught.value)
    assert message.startswith(f"7 invalid item(s) in {manifest}")
    assert all(culprit in message for culprit in problems)


def test_manifest_gender_nan_in_parquet_and_missing_columns(tmp_path):
    _wav(tmp_path / "a.wav")
    pq.write_table(
        pa.table(
            {
                "path": ["a.wav"],
                "label": ["ANG"],
                "speaker": ["s1"],
                "gender": pa.array([None], pa.string()),
            }
        ),
        tmp_path / "m.parquet",
    )
    scan = scan_manifest(tmp_path / "m.parquet")
    assert scan.problems == (("m.parquet row 1 (id=a)", "speaker 's1' has no gender"),)
    pq.write_table(
        pa.table(
            {"path": ["a.wav"], "label": ["ANG"], "speaker": ["s1"], "gender": [float("nan")]}
        ),
        tmp_path / "n.parquet",
    )
    assert "has no gender" in scan_manifest(tmp_path / "n.parquet").problems[0][1]

    no_gender = write_manifest(
        tmp_path, [{"path": "a.wav", "label": "ANG", "speaker": "s1"}], name="x.csv"
    )
    ((culprit, reason),) = scan_manifest(no_gender).problems
    assert culprit == str(no_gender) and "missing required column(s) ['gender']" in reason
    ((culprit, reason),) = scan_manifest(tmp_path / "absent.csv").problems
    assert culprit == str(tmp_path / "absent.csv") and "no such manifest" in reason


def test_crema_d_adapter_reads_names_and_genders(tmp_path):
    folder = _crema_folder(
        tmp_path,
        ["1001_DFA_ANG_XX.wav", "1002_IEO_HAP_HI.wav"],
        [
            [1001, 51, "Male", "Caucasian", "Not Hispanic"],
            [1002, 21, "Female", "Caucasian", "Not Hispanic"],
        ],
    )
    scan = scan_crema_d(folder)
    assert scan.problems == ()
    assert [(c.clip_id, c.speaker, c.gender, c.label, c.dataset) for c in scan.clips] == [
        ("1001_DFA_ANG_XX", "1001", "M", "ANG", "crema-d"),
        ("1002_IEO_HAP_HI", "1002", "F", "HAP", "crema-d"),
    ]


def test_crema_d_adapter_reports_every_problem_at_once(tmp_path):
    names = [
        "1001_DFA_ANG_XX.wav",
        "notes.wav",
        "1001_DFA_XYZ_XX.wav",
        "1077_DFA_ANG_XX.wav",
        "1003_DFA_SAD_XX.wav",
    ]
    folder = _crema_folder(
        tmp_path,
        names,
        [
            [1001, 51, "Male", "Caucasian", "Not Hispanic"],
            [1003, 21, "", "Caucasian", "Not Hispanic"],
        ],
    )
    shutil.copy(
        write_bad_audio(tmp_path / "bad")["truncated"], folder / "AudioWAV" / "1001_IEO_SAD_XX.wav"
    )
    scan = scan_crema_d(folder)
    audio = folder / "AudioWAV"
    problems = dict(scan.problems)
    assert [c.clip_id for c in scan.clips] == ["1001_DFA_ANG_XX"]
    assert (
        "file name is not <ActorID>_<Sentence>_<Emotion>_<Level>.wav"
        in problems[str(audio / "notes.wav")]
    )
    assert "unknown emotion code 'XYZ'" in problems[str(audio / "1001_DFA_XYZ_XX.wav")]
    assert (
        "actor 1077 is not in VideoDemographics.csv" in problems[str(audio / "1077_DFA_ANG_XX.wav")]
    )
    assert "speaker 1003 has no gender" in problems[str(audio / "1003_DFA_SAD_XX.wav")]
    assert "truncated" in problems[str(audio / "1001_IEO_SAD_XX.wav")]
    assert len(problems) == 5
    with pytest.raises(InvalidManifestError) as caught:
        scan.raise_for_problems()
    assert len(caught.value.problems) == 5

    (folder / "VideoDemographics.csv").unlink()
    ((culprit, reason),) = scan_crema_d(folder).problems
    assert culprit == str(folder / "VideoDemographics.csv") and "missing" in reason


def test_crema_d_adapter_on_real_metadata_with_generated_audio(tmp_path):
    metadata = crema_d_metadata()
    if metadata is None:
        pytest.skip("CREMA-D metadata (../shared/crema-d or $SERLENS_SHARED) not available")
    files, actors = metadata
    chosen = {"1001", "1002", "1091"}  # first male, first female, last actor
    subset = [(name, seconds) for name, seconds in files if name.split("_")[0] in chosen]
    assert len(subset) > 200
    (tmp_path / "AudioWAV").mkdir()
    for name, seconds in subset:  # real names and durations; a cheap tone instead of speech
        sf.write(str(tmp_path / "AudioWAV" / name), sine(220.0, seconds), 16000, subtype="PCM_16")
    with open(tmp_path / "VideoDemographics.csv", "w", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
        for actor, row in actors.items():
            writer.writerow(
                [int(actor), int(row["Age"]), row["Sex"], row["Race"], row["Ethnicity"]]
            )
    scan = scan_crema_d(tmp_path)
    assert scan.problems == ()
    assert len(scan.clips) == len(subset)
    expected = dict(subset)
    for clip in scan.clips:
        actor, _, emotion, _ = clip.clip_id.split("_")
        assert clip.speaker == actor and clip.label == emotion
        assert clip.gender == {"Male": "M", "Female": "F"}[actors[actor]["Sex"]]
        assert clip.duration_s == pytest.approx(expected[clip.clip_id + ".wav"], abs=1e-4)
        assert (clip.sampling_rate, clip.num_channels) == (16000, 1)
    assert {c.label for c in scan.clips} == set(EMOTIONS)


def test_dataset_scan_is_frozen():
    scan = DatasetScan(clips=(), problems=())
    with pytest.raises(AttributeError):
        scan.clips = ()  # type: ignore[misc]
    scan.raise_for_problems()


def test_another_label_set_is_summarised_in_one_paragraph(tmp_path):
    rows = ["path,label,speaker,gender"]
    for i in range(30):
        write_wav(tmp_path / f"c{i}.wav", voiced(0.6, seed=i), 16_000)
        rows.append(f"c{i}.wav,{['calm', 'angry', 'happy'][i % 3]},s{i % 6},{'F' if i % 2 else 'M'}")
    rows.append("missing.wav,calm,s0,M")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    scan = scan_manifest(tmp_path / "m.csv", labels=["ANG", "HAP"])
    assert len(scan.problems) == 31  # every row still recorded (for --skip-invalid's `skipped` table)
    with pytest.raises(InvalidManifestError) as info:
        scan.raise_for_problems()
    message = str(info.value)
    assert len(info.value.problems) == 2 and "missing.wav" in message
    assert "30 clip(s) carry labels outside dataset.labels ['ANG', 'HAP']" in message
    assert "calm (10), angry (10), happy (10)" in message and "dataset.labels=[" in message
