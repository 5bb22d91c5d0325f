"""Model loading: a missing feature-extractor config is an error, and checkpoints carry theirs."""

from __future__ import annotations

import numpy as np
import pytest

from serlens.shared.errors import ModelLoadError
from serlens.shared.models import (
    SpeechClassifier,
    create_random_encoder,
    load_encoder,
    save_feature_extractor,
    standardize,
    standardize_into,
)


def test_a_folder_without_an_extractor_config_is_named(tmp_path):
    folder = create_random_encoder(tmp_path / "enc", seed=0)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match="preprocessor_config.json"):
        load_encoder(str(folder))


def test_an_unreadable_extractor_config_is_named(tmp_path):
    folder = create_random_encoder(tmp_path / "enc", seed=0)
    (folder / "preprocessor_config.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match="missing or unreadable"):
        load_encoder(str(folder))


def test_the_extractor_settings_are_read_not_guessed(tmp_path):
    folder = create_random_encoder(tmp_path / "enc", seed=0)
    save_feature_extractor(folder, sampling_rate=16_000, do_normalize=False, attention_mask=True)
    _, bundle = load_encoder(str(folder))
    assert bundle.do_normalize is False


def test_a_saved_classifier_keeps_its_extractor_settings(tmp_path):
    folder = create_random_encoder(tmp_path / "enc", seed=0)
    save_feature_extractor(folder, sampling_rate=16_000, do_normalize=False, attention_mask=True)
    encoder, bundle = load_encoder(str(folder))
    saved = SpeechClassifier(encoder, bundle, ["A", "B"]).save(tmp_path / "ck")
    loaded = SpeechClassifier.load(saved)
    assert loaded.bundle.do_normalize is False and loaded.labels == ["A", "B"]


def test_standardize_into_writes_exactly_what_standardize_returns():
    rng = np.random.default_rng(3)
    for length in (1, 2, 401, 47_999, 48_000):
        for scale, offset in ((0.1, 0.0), (1e-4, 3e-4), (30.0, -7.0)):
            signal = (rng.standard_normal(length) * scale + offset).astype(np.float32)
            for scratch in (None, np.empty(length + 3, np.float32)):
                row = np.full(length + 5, np.nan, np.float32)
                standardize_into(signal, row[:length], scratch)
                assert np.array_equal(row[:length], standardize(signal)), (length, scale)
                assert np.isnan(row[length:]).all()  # nothing written past the clip
