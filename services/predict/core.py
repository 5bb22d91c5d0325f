"""Pure helpers of the predict service: softmax and label mapping."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed stably (max subtracted first).

    Args:
        logits: shape ``(..., num_labels)``.

    Returns:
        float64 array of the same shape; each row sums to 1.
    """
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities_by_label(probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """One clip's probabilities keyed by class label, in label order.

    Raises:
        ValueError: when the vector and the labels differ in length.
    """
    row = np.asarray(probabilities).reshape(-1)
    if row.size != len(labels):
        raise ValueError(f"{row.size} probabilities for {len(labels)} labels {list(labels)}")
    return {label: float(p) for label, p in zip(labels, row, strict=True)}
