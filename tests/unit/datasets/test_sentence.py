"""The sentence of a clip (a confound of partial CKA) reaches the clip records."""

from __future__ import annotations

import numpy as np

from serlens.shared.audio import write_wav
from serlens.shared.datasets import scan_crema_d, scan_manifest
from serlens.shared.demo_corpus import write_demo_corpus
from serlens.shared.testing import write_manifest


def test_crema_d_sentence_is_the_second_field_of_the_file_name(tmp_path):
    root = write_demo_corpus(tmp_path / "demo", num_speakers=2, sentences_per_emotion=2)
    scan = scan_crema_d(root)
    assert scan.problems == ()
    assert {c.sentence for c in scan.clips} == {"DFA", "IEO"}
    assert all(c.clip_id.split("_")[1] == c.sentence for c in scan.clips)


def test_manifest_sentence_column_is_optional(tmp_path):
    for name in ("a", "b"):
        write_wav(tmp_path / f"{name}.wav", 0.1 * np.sin(np.arange(8000) / 5.0).astype(np.float32), 16_000)
    rows = [{"path": "a.wav", "label": "HAP", "speaker": "s1", "gender": "F", "sentence": "IEO"},
            {"path": "b.wav", "label": "SAD", "speaker": "s1", "gender": "F", "sentence": ""}]
    with_column = scan_manifest(write_manifest(tmp_path, rows), labels=None)
    assert [c.sentence for c in with_column.clips] == ["IEO", None]
    without = scan_manifest(write_manifest(tmp_path, [{k: v for k, v in r.items() if k != "sentence"} for r in rows],
                                           name="plain.csv"), labels=None)
    assert [c.sentence for c in without.clips] == [None, None]
