"""Per-class scores and speaker-level intervals of classification probes.

Clips of one speaker are not independent (the same voice, the same recording session), so an
interval that resamples clips is too narrow. The unit here is the speaker: the delete-one-
speaker jackknife of macro-F1 (Efron and Tibshirani 1993, ch. 11), computed from per-speaker
confusion counts so that every probe's interval costs one bincount.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A point estimate and its speaker-jackknife interval (arrays of the same shape).

    Attributes:
        estimate: the statistic on every clip.
        low: lower bound.
        high: upper bound.
        std_error: jackknife standard error.
        level: coverage of the interval, e.g. 0.95.
        units: speakers resampled.
    """

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    std_error: np.ndarray
    level: float
    units: int


def confusion_counts(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrices [..., K, K] (rows true class, columns predicted) of ``predicted`` [..., n]."""
    pred = np.asarray(predicted, dtype=np.int64)
    lead = pred.shape[:-1]
    flat = pred.reshape(-1, pred.shape[-1])
    codes = np.asarray(truth, dtype=np.int64)[None, :] * num_classes + flat
    codes += np.arange(flat.shape[0])[:, None] * num_classes * num_classes
    counts = np.bincount(codes.ravel(), minlength=flat.shape[0] * num_classes * num_classes)
    return counts.reshape(*lead, num_classes, num_classes)


def f1_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class F1 [..., K] of confusion matrices [..., K, K] (0 for a class never seen nor predicted)."""
    counts = np.asarray(confusion, dtype=np.float64)
    hits = np.diagonal(counts, axis1=-2, axis2=-1)
    denominator = counts.sum(axis=-1) + counts.sum(axis=-2)
    return np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)


def speaker_jackknife(
    predicted: np.ndarray,
    truth: np.ndarray,
    speakers: np.ndarray,
    num_classes: int,
    *,
    level: float = 0.95,
) -> Interval:
    """Macro-F1 with a delete-one-speaker jackknife interval, averaged over a seed axis.

    Args:
        predicted: predicted class codes [..., seeds, n] (the statistic is the mean over seeds
            of each seed's macro-F1 over the n clips).
        truth: true class codes [n].
        speakers: speaker id per clip [n].
        num_classes: K (macro-F1 averages K per-class F1 values).
        level: coverage of the interval (Student t with G-1 degrees of freedom).

    Returns:
        ``Interval`` of shape ``predicted.shape[:-2]``.
    """
    _, groups = np.unique(np.asarray(speakers), return_inverse=True)
    num_groups = int(groups.max()) + 1
    pred = np.asarray(predicted, dtype=np.int64)
    # Per-speaker confusion counts: [..., seeds, G, K, K].
    per_group = np.stack(
        [confusion_counts(pred[..., groups == g], truth[groups == g], num_classes)
         for g in range(num_groups)], axis=-3,
    )
    total = per_group.sum(axis=-3)
    estimate = f1_from_confusion(total).mean(axis=-1).mean(axis=-1)
    left_out = f1_from_confusion(total[..., None, :, :] - per_group).mean(axis=-1)  # [..., S, G]
    replicates = left_out.mean(axis=-2)  # mean over seeds: [..., G]
    centre = replicates.mean(axis=-1, keepdims=True)
    variance = (num_groups - 1) / num_groups * np.square(replicates - centre).sum(axis=-1)
    std_error = np.sqrt(variance)
    quantile = stats.t.ppf(0.5 + level / 2, df=max(num_groups - 1, 1))
    return Interval(estimate, estimate - quantile * std_error, estimate + quantile * std_error,
                    std_error, level, num_groups)
