"""Row builders: what the pipeline and the API write fits the schema, with the same columns."""

from __future__ import annotations

import numpy as np
import pytest

from serlens.shared.errors import InvalidInputError
from serlens.shared.rows import clip_row, egemaps_table, embedding_table
from serlens.shared.schema import CLIPS, EMBEDDINGS, LoudnessRecord, egemaps_feature_names, egemaps_spec
from serlens.shared.store import FeatureStore

ITEM = {"clip_id": "c1", "dataset": "d", "audio_sha256": "h1"}


def test_rows_fit_their_tables(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    loudness = LoudnessRecord(lufs_before=-30.0, lufs_after=-23.0, gain_db=7.0, peak_dbfs=-3.0,
                              clipped_fraction=0.0, policy="normalized")
    row = clip_row(clip_id="c1", dataset="d", source_path="/x.wav", audio_sha256="h1", num_samples=24_000,
                   source_sampling_rate=48_000, source_num_channels=2, loudness=loudness, target_lufs=-23.0,
                   normalized_path="/n.wav", normalized_sha256="n1", labels={"speaker": "s", "subset": 3})
    store.write(CLIPS.name, [row], config_hash="k")
    (stored,) = store.read(CLIPS.name).to_pylist()
    assert stored["duration_s"] == 1.5 and stored["lufs_after"] == -23.0 and stored["subset"] == 3
    names = egemaps_feature_names()
    store.write(egemaps_spec().name, egemaps_table([ITEM], np.ones((1, len(names))), feature_names=names,
                                                   extractor_version="v"), config_hash="e")
    assert store.read(egemaps_spec().name).num_rows == 1
    pooled = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    table = embedding_table([ITEM, {**ITEM, "clip_id": "c2"}], pooled, layers=[0, 12, 24], model="m",
                            train_key="t", step=50)
    store.write(EMBEDDINGS.name, table, config_hash="x")
    rows = store.read(EMBEDDINGS.name, order_by=["clip_id", "layer"]).to_pylist()
    assert [(r["clip_id"], r["layer"]) for r in rows] == [("c1", 0), ("c1", 12), ("c1", 24),
                                                        ("c2", 0), ("c2", 12), ("c2", 24)]
    assert rows[4]["embedding"] == [16.0, 17.0, 18.0, 19.0] and rows[0]["transformers_version"]


def test_shapes_are_checked():
    with pytest.raises(InvalidInputError, match="3 indices"):
        embedding_table([ITEM], np.zeros((1, 2, 4)), layers=[0, 1, 2], model="m", train_key="t", step=0)
    with pytest.raises(InvalidInputError, match="expected"):
        egemaps_table([ITEM], np.zeros((1, 3)), feature_names=["a", "b"], extractor_version="v")
