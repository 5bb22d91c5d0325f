"""The fine-tuned classifier's predictions from its saved head equal SpeechClassifier's head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from serlens.probe.classifier import classifier_predictions
from serlens.shared.errors import InvalidInputError, ModelLoadError
from serlens.shared.models import HEAD_FILENAME, LABELS_FILENAME


def test_head_predictions_follow_the_probe_class_order(tmp_path: Path) -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 4)
    labels = ["SAD", "ANG", "HAP", "NEU"]  # the checkpoint's own order
    torch.save(head.state_dict(), tmp_path / HEAD_FILENAME)
    (tmp_path / LABELS_FILENAME).write_text(json.dumps(labels))
    pooled = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    classes = ("ANG", "HAP", "SAD")  # what the analysis clips hold, probe order; NEU absent
    codes = classifier_predictions(tmp_path, pooled, classes)
    with torch.no_grad():
        expected = [labels[i] for i in head(torch.as_tensor(pooled)).argmax(-1).tolist()]
    assert [classes[c] if c >= 0 else "NEU" for c in codes] == expected
    with pytest.raises(InvalidInputError):
        classifier_predictions(tmp_path, pooled[:, :5], classes)
    with pytest.raises(ModelLoadError):
        classifier_predictions(tmp_path / "missing", pooled, classes)
