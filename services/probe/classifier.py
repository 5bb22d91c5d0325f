"""The fine-tuned classifier's own predictions on the analysis clips, from its saved head.

``serlens.shared.models.SpeechClassifier`` is the encoder, the mean over valid frames of its
last hidden state, and one linear layer. The embedding stage already stores that mean (the
last hidden state, mean-pooled the same way) for every checkpoint and analysis clip, so the
classifier's logits are its head applied to the last layer's embedding: no encoder pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from serlens.shared.errors import InvalidInputError, ModelLoadError
from serlens.shared.models import HEAD_FILENAME, LABELS_FILENAME


def classifier_predictions(
    folder: str | Path, pooled_last_layer: np.ndarray, classes: Sequence[str]
) -> np.ndarray:
    """Class codes (indices into ``classes``) predicted by the checkpoint's head.

    Args:
        folder: a fine-tuned checkpoint written by ``SpeechClassifier.save``.
        pooled_last_layer: n x hidden mean-pooled last hidden states of that checkpoint.
        classes: the probe's class order.

    Returns:
        int64 codes [n]; a clip predicted as a label outside ``classes`` gets code -1.

    Raises:
        ModelLoadError: the folder holds no classifier head.
        InvalidInputError: the embedding width does not match the head.
    """
    path = Path(folder)
    if not (path / HEAD_FILENAME).is_file():
        raise ModelLoadError(f"{path} holds no classifier head ({HEAD_FILENAME})")
    state = torch.load(path / HEAD_FILENAME, map_location="cpu")
    labels = json.loads((path / LABELS_FILENAME).read_text())
    features = torch.as_tensor(np.asarray(pooled_last_layer), dtype=torch.float32)
    if features.ndim != 2 or features.shape[1] != state["weight"].shape[1]:
        raise InvalidInputError(
            [("embeddings", f"shape {tuple(features.shape)}; the head expects "
                            f"{state['weight'].shape[1]} features")], source="classifier")
    with torch.no_grad():
        predicted = torch.nn.functional.linear(features, state["weight"], state["bias"]).argmax(-1)
    index = {label: i for i, label in enumerate(classes)}
    return np.array([index.get(labels[p], -1) for p in predicted.tolist()], dtype=np.int64)
