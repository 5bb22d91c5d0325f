"""Evaluation protocols of the classification probes: which clips train, stop and test them.

- ``paper``: one label-stratified 80/10/10 split of the analysis clips, as in the paper
  (speakers appear on both sides, so the F1 is speaker-dependent); the test part is scored.
- ``grouped_cv``: speaker-grouped K-fold; fold f is tested by probes trained on the other
  folds minus a validation part of whole speakers for early stopping, so every clip is
  predicted exactly once by probes that never heard its speaker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serlens.probe.batched import train_probes
from serlens.probe.config import ProbeConfig
from serlens.probe.core import Split, stratified_split
from serlens.probe.folds import effective_folds, grouped_cv_splits
from serlens.probe.heads import HeadKind
from serlens.shared.errors import InvalidInputError


@dataclass(frozen=True)
class ProtocolResult:
    """Predictions of every probe on the clips its protocol scores.

    Attributes:
        scored: indices of the scored clips (all clips for ``grouped_cv``).
        predictions: class codes [n_sets, seeds, len(scored)] at the stop weights.
        predictions_best: the same at the best-validation weights.
        epochs: stop epoch per probe, mean over folds [n_sets, seeds].
        val_loss: validation loss at the stop, mean over folds [n_sets, seeds].
    """

    scored: np.ndarray
    predictions: np.ndarray
    predictions_best: np.ndarray
    epochs: np.ndarray
    val_loss: np.ndarray


def protocol_splits(
    config: ProbeConfig, labels: np.ndarray, speakers: np.ndarray | None
) -> list[Split]:
    """The splits of ``config.protocol`` (one for ``paper``, K for ``grouped_cv``).

    Raises:
        InvalidInputError: ``grouped_cv`` without speaker ids, or with too few speakers.
    """
    if config.protocol == "paper":
        return [stratified_split(labels, config.split, config.split_seed)]
    if speakers is None:
        raise InvalidInputError(
            [("speakers", "probe.protocol 'grouped_cv' needs one speaker id per clip")],
            source="probe input",
        )
    folds = effective_folds(speakers, config.folds)
    return grouped_cv_splits(speakers, folds, seed=config.split_seed,
                             val_fraction=config.val_fraction)


def run_protocol(
    feature_sets: Sequence[np.ndarray],
    codes: np.ndarray,
    splits: Sequence[Split],
    *,
    config: ProbeConfig,
    head: HeadKind,
) -> ProtocolResult:
    """Train every probe on every split; gather each scored clip's predictions.

    Args:
        feature_sets: arrays n x d_i.
        codes: n class codes.
        splits: from ``protocol_splits``; their test parts are disjoint.
        config: the training rules.
        head: ``linear`` or ``mlp``.

    Returns:
        ``ProtocolResult`` over the union of the test parts (sorted clip indices).
    """
    scored = np.sort(np.concatenate([test for _, _, test in splits]))
    position = np.empty(len(codes), dtype=np.int64)
    position[scored] = np.arange(len(scored))
    shape = (len(feature_sets), config.seeds)
    predictions = np.zeros((*shape, len(scored)), dtype=np.int64)
    predictions_best = np.zeros_like(predictions)
    epochs, val_loss = np.zeros(shape), np.zeros(shape)
    for split in splits:
        results = train_probes(feature_sets, codes, split, config=config, head=head)
        columns = position[split[2]]
        predictions[..., columns] = results.predictions
        predictions_best[..., columns] = results.predictions_best
        epochs += results.epochs / len(splits)
        val_loss += results.val_loss / len(splits)
    return ProtocolResult(scored, predictions, predictions_best, epochs, val_loss)


def control_labels(codes: np.ndarray, speakers: np.ndarray | None, seed: int) -> np.ndarray:
    """The control task's labels: each speaker's labels shuffled among that speaker's clips.

    The class balance of every speaker is kept, and every relation between a clip's features
    and its label is broken; a probe that scores above chance on it memorises, and selectivity
    (task minus control, Hewitt and Liang 2019) discounts that.
    """
    rng = np.random.default_rng(seed)
    groups = np.zeros(len(codes), dtype=np.int64) if speakers is None else np.unique(
        np.asarray(speakers), return_inverse=True)[1]
    out = np.array(codes, copy=True)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        out[rows] = codes[rng.permutation(rows)]
    return out
