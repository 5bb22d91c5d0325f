"""Row builders, beside the schema: the one place that turns computed values into table rows.

The pipeline's Ray workers and the API's store writer both call these, so a clip, its eGeMAPS
features or its embeddings have the same columns whoever computed them. Lineage columns
(``config_hash``, ``created_at``) are added by ``FeatureStore.write``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from serlens.shared.audio import TARGET_SAMPLING_RATE
from serlens.shared.errors import InvalidInputError
from serlens.shared.schema import LoudnessRecord


def clip_row(*, clip_id: str, dataset: str, source_path: str, audio_sha256: str, num_samples: int,
             source_sampling_rate: int | None, source_num_channels: int | None, loudness: LoudnessRecord,
             target_lufs: float, normalized_path: str, normalized_sha256: str,
             labels: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One ``clips`` row: a clip, its normalised 16 kHz file and what the normalisation did.

    Args:
        clip_id: the clip's key in its dataset.
        dataset: the dataset's name (``api`` for uploads).
        source_path: the source file (``upload:<name>`` for uploads).
        audio_sha256: SHA-256 of the source bytes.
        num_samples: samples of the normalised 16 kHz signal.
        source_sampling_rate: the source's rate, in Hz.
        source_num_channels: the source's channel count.
        loudness: what loudness normalisation measured and did.
        target_lufs: the normalisation target, in LUFS.
        normalized_path: the normalised WAV.
        normalized_sha256: its SHA-256.
        labels: what a dataset knows of the clip: speaker, gender, label, subset, sentence.
    """
    return {
        "clip_id": clip_id, "dataset": dataset, "source_path": source_path, "audio_sha256": audio_sha256,
        **dict(labels or {}),
        "duration_s": num_samples / TARGET_SAMPLING_RATE, "sampling_rate": TARGET_SAMPLING_RATE,
        "source_sampling_rate": source_sampling_rate, "source_num_channels": source_num_channels,
        **loudness.as_columns(), "target_lufs": target_lufs,
        "normalized_path": normalized_path, "normalized_sha256": normalized_sha256,
    }


def egemaps_table(items: Sequence[Mapping[str, Any]], features: np.ndarray, *, feature_names: Sequence[str],
                  extractor_version: str) -> pa.Table:
    """The ``egemaps`` rows of ``features`` (clips x 88), one per item (``clip_id``, ``dataset``, ``audio_sha256``).

    Raises:
        InvalidInputError: ``features`` is not one row per item and one column per name.
    """
    if features.shape != (len(items), len(feature_names)):
        expected = (len(items), len(feature_names))
        raise InvalidInputError([("features", f"shape {features.shape}; expected {expected}")], source="egemaps table")
    columns: dict[str, Any] = {
        "clip_id": [i["clip_id"] for i in items],
        "dataset": [i["dataset"] for i in items],
        "audio_sha256": [i["audio_sha256"] for i in items],
        "extractor_version": [extractor_version] * len(items),
    }
    for j, name in enumerate(feature_names):
        columns[name] = pa.array(np.asarray(features[:, j], dtype=np.float32), pa.float32())
    return pa.table(columns)


def embedding_table(items: Sequence[Mapping[str, Any]], pooled: np.ndarray, *, layers: Sequence[int], model: str,
                    train_key: str, step: int) -> pa.Table:
    """The ``embeddings`` rows of ``pooled`` (clips x kept hidden states x dim).

    ``layers`` are the hidden-state indices kept, in ``pooled``'s order: a row's ``layer`` is
    the hidden-state index, never its position in ``embed.layers``.

    Raises:
        InvalidInputError: ``layers`` does not have one index per pooled hidden state.
    """
    from serlens.shared.hidden_states import transformers_version

    n, num_layers, dim = pooled.shape
    if len(layers) != num_layers:
        raise InvalidInputError([("layers", f"{len(layers)} indices {list(layers)}; pooled has {num_layers}")],
                                source="embeddings table")
    flat = pa.array(pooled.reshape(-1).astype(np.float32), pa.float32())
    offsets = pa.array(np.arange(0, n * num_layers * dim + 1, dim, dtype=np.int32))
    count = n * num_layers
    return pa.table({
        "clip_id": [i["clip_id"] for i in items for _ in range(num_layers)],
        "dataset": [i["dataset"] for i in items for _ in range(num_layers)],
        "audio_sha256": [i["audio_sha256"] for i in items for _ in range(num_layers)],
        "model": [model] * count,
        "train_key": [train_key] * count,
        "checkpoint_step": pa.array([step] * count, pa.int32()),
        "layer": pa.array([int(i) for i in layers] * n, pa.int16()),
        "pooling": ["mean"] * count,
        "embedding": pa.ListArray.from_arrays(offsets, flat),
        "transformers_version": [transformers_version()] * count,
    })
