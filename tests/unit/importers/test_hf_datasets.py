"""A tiny ``datasets.Dataset`` saved with ``save_to_disk`` becomes a manifest serlens reads."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from serlens.pipeline.cli import main
from serlens.shared.datasets import scan_manifest
from serlens.shared.errors import InvalidInputError
from serlens.shared.importers.hf_datasets import HfColumns, import_hf_dataset
from serlens.shared.testing import voiced

datasets = pytest.importorskip("datasets")


def _audio_cell(folder, name, seed, embed=True):
    path = folder / name
    sf.write(str(path), voiced(0.6, seed=seed), 22_050, subtype="PCM_16")
    return {"bytes": path.read_bytes() if embed else None, "path": name if embed else str(path)}


def _dataset(folder, rows, embed=True):
    """A Dataset with a real ``Audio`` column (built from bytes: encoding arrays needs torchcodec)."""
    folder.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "emotion": datasets.ClassLabel(names=["angry", "happy", "sad"]),
        "speaker": datasets.Value("string"), "sex": datasets.Value("string"), "text": datasets.Value("string")})
    data = {"audio": [_audio_cell(folder, f"{i}.flac" if i % 2 else f"{i}.wav", i, embed) for i in range(len(rows))],
            **{key: [row[j] for row in rows] for j, key in enumerate(("emotion", "speaker", "sex", "text"))}}
    return datasets.Dataset.from_dict(data, features=features).cast_column("audio", datasets.Audio())


ROWS = [(0, "s1", "female", "hello"), (1, "s2", "Male", "hi"), (2, "s1", "female", "hey"), (1, "s3", "M", "yo")]
COLUMNS = HfColumns(label="emotion", speaker="speaker", gender="sex", sentence="text")


def test_embedded_audio_is_written_and_class_names_used(tmp_path):
    _dataset(tmp_path / "src", ROWS).save_to_disk(str(tmp_path / "saved"))
    result = import_hf_dataset(tmp_path / "saved", tmp_path / "out", columns=COLUMNS)
    assert result.rows == 4 and result.labels == {"happy": 2, "angry": 1, "sad": 1}
    scan = scan_manifest(result.manifest, labels=["angry", "happy", "sad"])
    assert scan.problems == ()
    assert [(c.clip_id, c.label, c.speaker, c.gender, c.sentence) for c in scan.clips] == [
        ("data-000000", "angry", "s1", "F", "hello"), ("data-000001", "happy", "s2", "M", "hi"),
        ("data-000002", "sad", "s1", "F", "hey"), ("data-000003", "happy", "s3", "M", "yo")]
    assert scan.clips[1].source_path.endswith(".flac") and scan.clips[0].sampling_rate == 22_050
    # The bytes are written unchanged: the same samples as the source file.
    written, _ = sf.read(scan.clips[0].source_path)
    original, _ = sf.read(str(tmp_path / "src" / "0.wav"))
    np.testing.assert_array_equal(written, original)


def test_a_dataset_dict_with_use_splits_fills_the_split_column(tmp_path):
    splits = datasets.DatasetDict({"train": _dataset(tmp_path / "a", ROWS[:2], embed=False),
                                   "test": _dataset(tmp_path / "b", [(2, "s3", "female", "hey"), (1, "s4", "M", "yo")],
                                                    embed=False)})
    splits.save_to_disk(str(tmp_path / "saved"))
    result = import_hf_dataset(tmp_path / "saved", tmp_path / "out", columns=COLUMNS, use_splits=True)
    scan = scan_manifest(result.manifest)
    assert scan.problems == ()
    assert [(c.clip_id, c.split) for c in scan.clips] == [("train-000000", "train"), ("train-000001", "train"),
                                                          ("test-000000", "analysis"), ("test-000001", "analysis")]
    # save_to_disk embeds the files a dataset points to; the importer writes them out per split.
    assert scan.clips[0].source_path == str(tmp_path / "out" / "audio" / "train" / "train-000000.wav")


def test_audio_the_dataset_only_points_to_is_referenced_where_it_is(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    cells = [_audio_cell(folder, f"{i}.wav", i, embed=False) for i in range(2)]
    datasets.Dataset.from_dict({"audio": cells, "label": ["angry", "sad"], "speaker_id": ["a", "b"],
                                "gender": ["F", "M"]}).save_to_disk(str(tmp_path / "saved"))
    result = import_hf_dataset(tmp_path / "saved", tmp_path / "out")
    assert [c.source_path for c in scan_manifest(result.manifest).clips] == [str(folder / "0.wav"),
                                                                             str(folder / "1.wav")]
    (folder / "1.wav").unlink()
    with pytest.raises(InvalidInputError, match=r"row 1 \(id=data-000001\): audio neither embedded nor found"):
        import_hf_dataset(tmp_path / "saved", tmp_path / "out2")


def test_missing_columns_and_empty_cells_are_named_before_anything_is_written(tmp_path):
    _dataset(tmp_path / "src", ROWS).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(InvalidInputError, match=r"no column\(s\) \['label', 'speaker_id', 'gender'\]"):
        import_hf_dataset(tmp_path / "saved", tmp_path / "out")
    _dataset(tmp_path / "src2", [(0, "", "female", "a"), (1, "s2", "", "b")]).save_to_disk(str(tmp_path / "s2"))
    with pytest.raises(InvalidInputError) as caught:
        import_hf_dataset(tmp_path / "s2", tmp_path / "out", columns=COLUMNS)
    assert "row 0 (id=data-000000): empty speaker" in str(caught.value)
    assert "row 1 (id=data-000001): empty gender" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_the_command_takes_the_column_names(tmp_path, capsys):
    _dataset(tmp_path / "src", ROWS).save_to_disk(str(tmp_path / "saved"))
    code = main(["import", "hf-datasets", str(tmp_path / "saved"), "--out", str(tmp_path / "out"),
                 "--label-column", "emotion", "--speaker-column", "speaker", "--gender-column", "sex"])
    assert code == 0 and "wrote 4 clip(s)" in capsys.readouterr().out
    assert main(["import", "hf-datasets", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a dataset written by save_to_disk" in capsys.readouterr().err
