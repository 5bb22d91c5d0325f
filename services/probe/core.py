"""Layer-wise linear probes: the paper's training rules, one probe at a time or all at once.

Rules of every probe (section 2.3.4 of the paper, PyTorch-Lightning-like):

- inputs standardised with statistics of the TRAIN part only;
- one linear layer (d -> K classes), cross-entropy, Adam (lr 1e-2), mini-batches of 16, the
  last batch of an epoch smaller when 16 does not divide the train part (Lightning keeps it);
- the validation loss (mean cross-entropy over the validation part) after every epoch, and
  Lightning's early stopping: an epoch improves when its loss is below the best so far by more
  than ``min_delta``; training stops after ``patience`` epochs in a row without improvement,
  at a non-finite loss, or at ``max_epochs``;
- test macro-F1 and accuracy both with the weights at the stop (Lightning does not restore the
  best weights) and with the best-validation weights (the paper is ambiguous; both are kept).

Two choices make probes comparable, and make the vectorised trainer reproduce the naive one:

- the seed (0, 1, ...) sets the initial weights and the mini-batch order: seed i draws the same
  initial weights for every feature set of a given dimension (``serlens.probe.heads``) and
  visits the train part in the same order in every cell (``batch_order``), so layers and
  checkpoints are compared on the same optimisation path, and the spread over seeds measures
  optimisation noise (initialisation and batch order).

``serlens.probe.naive.train_probe_naive`` is the by-itself reference (``torch.nn`` +
``torch.optim.Adam``, one probe at a time). ``serlens.probe.batched.train_probes`` trains every
probe at once with the same rules and the same numbers; it is the one the pipeline uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from serlens.shared.arrays import matrix_problem
from serlens.shared.errors import InvalidConfigError, InvalidInputError

Split = tuple[np.ndarray, np.ndarray, np.ndarray]

_SOURCE = "probe input"


@dataclass(frozen=True)
class ProbeOutcome:
    """Result of one probe.

    Attributes:
        f1_macro: test macro-F1 (unweighted mean of the per-class F1) at the stop weights.
        accuracy: test accuracy at the stop weights, in [0, 1].
        epochs: epochs trained (the stop epoch, 1-based).
        val_loss: validation cross-entropy of the stop weights, in nats.
        f1_macro_best: test macro-F1 at the best-validation weights.
        accuracy_best: test accuracy at the best-validation weights.
        best_epoch: the epoch of the best validation loss (1-based).
        val_loss_best: the best validation loss, in nats.
    """

    f1_macro: float
    accuracy: float
    epochs: int
    val_loss: float
    f1_macro_best: float
    accuracy_best: float
    best_epoch: int
    val_loss_best: float


@dataclass(frozen=True)
class ProbeResults:
    """Results of every probe: arrays [n_sets, seeds], row i for feature set i, column s for seed s.

    Attributes:
        f1_macro: test macro-F1 at the stop weights.
        accuracy: test accuracy at the stop weights.
        epochs: epochs trained (int64).
        val_loss: validation cross-entropy of the stop weights, in nats.
        f1_macro_best: test macro-F1 at the best-validation weights.
        accuracy_best: test accuracy at the best-validation weights.
        best_epoch: epoch of the best validation loss (int64).
        val_loss_best: the best validation loss, in nats.
        predictions: predicted class of every test clip at the stop weights [n_sets, seeds, n_test].
        predictions_best: the same at the best-validation weights.
    """

    f1_macro: np.ndarray
    accuracy: np.ndarray
    epochs: np.ndarray
    val_loss: np.ndarray
    f1_macro_best: np.ndarray
    accuracy_best: np.ndarray
    best_epoch: np.ndarray
    val_loss_best: np.ndarray
    predictions: np.ndarray
    predictions_best: np.ndarray

    def outcome(self, feature_set: int, seed: int) -> ProbeOutcome:
        """Return the result of one probe as a ``ProbeOutcome``."""
        at = (feature_set, seed)
        return ProbeOutcome(
            float(self.f1_macro[at]), float(self.accuracy[at]), int(self.epochs[at]),
            float(self.val_loss[at]), float(self.f1_macro_best[at]),
            float(self.accuracy_best[at]), int(self.best_epoch[at]),
            float(self.val_loss_best[at]),
        )


# ----------------------------------------------------------------------------- split


def _part_sizes(count: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Clips of one class per part: validation and test rounded half up, at least 1 each."""
    val = max(1, math.floor(count * fractions[1] + 0.5))
    test = max(1, math.floor(count * fractions[2] + 0.5))
    return count - val - test, val, test


def min_clips_per_class(fractions: Sequence[float]) -> int:
    """Fewest clips a class needs so that each part of the split gets at least one."""
    count = 3
    while _part_sizes(count, fractions)[0] < 1:
        count += 1
    return count


def stratified_split(
    labels: Sequence[object] | np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Split:
    """One label-stratified train/validation/test split.

    Each class is shuffled (``numpy.random.default_rng(seed)``) and cut in the given
    fractions: validation and test sizes are rounded half up with at least one clip each,
    the rest is train. The result depends only on the labels and the seed.

    Args:
        labels: one class label per clip (any hashable, sortable values).
        fractions: train, validation and test fractions, summing to 1.
        seed: seed of the shuffle.

    Returns:
        ``(train_idx, val_idx, test_idx)``: sorted int64 clip indices, disjoint, covering all.

    Raises:
        InvalidConfigError: fractions that are not three values in (0, 1) summing to 1.
        InvalidInputError: a class with too few clips to appear in every part (every
            such class is named).
    """
    if (
        len(fractions) != 3
        or any(not 0 < f < 1 for f in fractions)
        or not math.isclose(sum(fractions), 1.0)
    ):
        raise InvalidConfigError(
            f"probe.split: {tuple(fractions)}; expected three fractions in (0, 1) summing to 1"
        )
    values = np.asarray(labels)
    if values.ndim != 1 or values.size == 0:
        raise InvalidInputError(
            [("labels", f"shape {values.shape}; expected one label per clip")], source=_SOURCE
        )
    classes, codes = np.unique(values, return_inverse=True)
    needed = min_clips_per_class(fractions)
    counts = np.bincount(codes, minlength=len(classes))
    problems = [
        (
            f"class {label!r}",
            f"{count} clip(s); a {tuple(fractions)} split needs at least {needed} per class",
        )
        for label, count in zip(classes.tolist(), counts.tolist(), strict=True)
        if count < needed
    ]
    if problems:
        raise InvalidInputError(problems, source=_SOURCE)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for code in range(len(classes)):
        members = rng.permutation(np.flatnonzero(codes == code))
        train, val, _ = _part_sizes(len(members), fractions)
        for part, chunk in zip(parts, np.split(members, [train, train + val]), strict=True):
            part.append(chunk)
    train_idx, val_idx, test_idx = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train_idx, val_idx, test_idx


# ----------------------------------------------------------------------------- shared rules


@contextmanager
def single_threaded_ops() -> Iterator[None]:
    """Run torch ops on one thread each while workers run on parallel Python threads.

    Each op of a worker is far too small to gain from an OpenMP team, and teams of busy-waiting
    threads collapse when cores are shared; one worker per core scales instead. torch's thread
    count is process-wide, so it is restored on exit.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def batch_order(num_train: int, epoch: int, seed: int, split_seed: int = 0) -> np.ndarray:
    """Return the order in which the probe of ``seed`` visits the train part in epoch ``epoch``.

    The seed sets the batch order as well as the initial weights, so the spread over seeds
    measures both sources of optimisation noise; the order does not depend on the features,
    so every cell (layer, checkpoint) sees the same mini-batches for a given seed.
    """
    return np.random.default_rng([int(split_seed), int(seed), int(epoch)]).permutation(num_train)


def standardize_by_train(features: torch.Tensor, train_idx: torch.Tensor) -> torch.Tensor:
    """Z-score features with the train part's mean and (population) standard deviation.

    Args:
        features: [..., n_clips, d] float32 (one feature set, or several stacked).
        train_idx: indices of the train clips along the clip axis.

    Returns:
        float32 tensor of the same shape; features constant on the train part become 0.
    """
    train = features.index_select(-2, train_idx)
    mean = train.mean(dim=-2, keepdim=True)  # float32 with pairwise summation: ~1e-7 relative
    variance = train.sub_(mean).square_().mean(dim=-2, keepdim=True)
    # Constant features: rounding leaves a variance of ~(1e-7 mean)², not exactly 0.
    constant = variance <= 1e-12 * mean.square()
    scale = torch.where(constant, torch.zeros_like(variance), variance.rsqrt())
    return (features - mean).mul_(scale)


class _EarlyStopping:
    """Lightning's EarlyStopping on the validation loss, for an array of probes at once."""

    def __init__(
        self, shape: tuple[int, ...], *, patience: int, min_delta: float, device: torch.device
    ) -> None:
        self.best = torch.full(shape, math.inf, dtype=torch.float64, device=device)
        self.wait = torch.zeros(shape, dtype=torch.int64, device=device)
        self.patience = patience
        self.min_delta = min_delta
        self.improved = torch.zeros(shape, dtype=torch.bool, device=device)

    def update(self, val_loss: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Record one epoch's losses of the active probes; return which of them stop now."""
        loss = val_loss.to(torch.float64)
        improved = active & (loss < self.best - self.min_delta)
        self.improved = improved
        self.best = torch.where(improved, loss, self.best)
        self.wait = torch.where(improved, 0, torch.where(active, self.wait + 1, self.wait))
        return active & ((self.wait >= self.patience) | ~torch.isfinite(loss))

    def reset(self, row: int) -> None:
        self.best[row], self.wait[row] = math.inf, 0

    def keep(self, rows: torch.Tensor) -> None:
        self.best, self.wait = self.best[rows], self.wait[rows]
        self.improved = self.improved[rows]


def _metrics(
    predicted: torch.Tensor, truth: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Macro-F1 and accuracy over the last axis; ``predicted`` [..., n], ``truth`` [n]."""
    hits = predicted == truth
    accuracy = hits.double().mean(-1)
    f1 = torch.zeros(predicted.shape[:-1], dtype=torch.float64, device=predicted.device)
    for k in range(num_classes):
        true_k = truth == k
        tp = (hits & true_k).sum(-1).double()
        denominator = (predicted == k).sum(-1).double() + true_k.sum().double()
        f1 += torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), 0.0)
    return f1 / num_classes, accuracy


def _check_inputs(
    feature_sets: Sequence[np.ndarray], y: np.ndarray, split: Split
) -> tuple[np.ndarray, int]:
    codes = np.asarray(y)
    if (
        codes.ndim != 1
        or not np.issubdtype(codes.dtype, np.integer)
        or codes.size == 0
        or codes.min() < 0
    ):
        raise InvalidInputError(
            [("labels", "expected a non-empty 1-D array of class codes 0..K-1")], source=_SOURCE
        )
    num_classes = int(codes.max()) + 1
    problems = []
    for i, x in enumerate(feature_sets):
        reason = matrix_problem(x, num_rows=codes.size, rows_are="label")
        if reason is not None:
            problems.append((f"feature set {i}", reason))
    parts = [np.asarray(p) for p in split]
    if len(parts) != 3 or any(p.size == 0 or p.min() < 0 or p.max() >= codes.size for p in parts):
        problems.append(
            ("split", f"expected three non-empty index arrays within [0, {codes.size})")
        )
    elif np.unique(np.concatenate(parts)).size != sum(p.size for p in parts):
        problems.append(("split", "train, validation and test parts overlap"))
    if problems:
        raise InvalidInputError(problems, source=_SOURCE)
    return codes.astype(np.int64), num_classes
