"""Layer-wise linear probes: the paper's training rules, one probe at a time or all at once.

Rules of every probe (section 2.3.4 of the paper, PyTorch-Lightning-like):

- inputs standardised with statistics of the TRAIN part only;
- one linear layer (d -> K classes), cross-entropy, Adam (lr 1e-2), mini-batches of 16, the
  last batch of an epoch smaller when 16 does not divide the train part (Lightning keeps it);
- the validation loss (mean cross-entropy over the validation part) after every epoch, and
  Lightning's early stopping: an epoch improves when its loss is below the best so far by more
  than ``min_delta``; training stops after ``patience`` epochs in a row without improvement,
  at a non-finite loss, or at ``max_epochs``;
- test macro-F1 and accuracy with the weights at the stop (Lightning does not restore the
  best weights), and the validation loss of those weights.

Two choices make probes comparable, and make the vectorised trainer reproduce the naive one:

- the seed (0, 1, ...) sets the linear layer's initial weights and nothing else: seed i draws
  the same initial weights for every feature set of a given dimension (``init_weights``);
- the mini-batch order of epoch e is one permutation of the train part fixed by
  ``(split_seed, e)`` (``batch_order``) and shared by every probe, so layers and checkpoints
  are compared on the same sequence of mini-batches, and the seeds measure the effect of the
  initialisation alone (the paper's stated purpose of the 10 seeds).

``train_probe_naive`` is the by-itself reference (``nn.Linear`` + ``torch.optim.Adam``, one
probe at a time). ``serlens.probe.batched.train_probes`` trains every probe at once with the
same rules and the same numbers; it is the one the pipeline uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from serlens.probe.config import ProbeConfig
from serlens.shared.errors import InvalidConfigError, InvalidInputError

Split = tuple[np.ndarray, np.ndarray, np.ndarray]

_SOURCE = "probe input"


@dataclass(frozen=True)
class ProbeOutcome:
    """Result of one probe.

    Attributes:
        f1_macro: test macro-F1 (unweighted mean of the per-class F1), in [0, 1].
        accuracy: test accuracy, in [0, 1].
        epochs: epochs trained (the stop epoch, 1-based).
        val_loss: validation cross-entropy of the final weights, in nats.
    """

    f1_macro: float
    accuracy: float
    epochs: int
    val_loss: float


@dataclass(frozen=True)
class ProbeResults:
    """Results of every probe: arrays [n_sets, seeds], row i for feature set i, column s for seed s.

    Attributes:
        f1_macro: test macro-F1.
        accuracy: test accuracy.
        epochs: epochs trained (int64).
        val_loss: validation cross-entropy of the final weights, in nats.
    """

    f1_macro: np.ndarray
    accuracy: np.ndarray
    epochs: np.ndarray
    val_loss: np.ndarray

    def outcome(self, feature_set: int, seed: int) -> ProbeOutcome:
        """Return the result of one probe as a ``ProbeOutcome``."""
        return ProbeOutcome(
            float(self.f1_macro[feature_set, seed]),
            float(self.accuracy[feature_set, seed]),
            int(self.epochs[feature_set, seed]),
            float(self.val_loss[feature_set, seed]),
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


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU.

    Raises:
        InvalidConfigError: ``cuda`` asked for where there is none, or an unknown name.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidConfigError(
            "probe.device: 'cuda' but no CUDA device is available; use 'auto' or 'cpu'"
        )
    if device not in ("cpu", "cuda"):
        raise InvalidConfigError(f"probe.device: {device!r}; expected 'auto', 'cpu' or 'cuda'")
    return torch.device(device)


def init_weights(dim: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the initial weights of the probe of seed ``seed`` (``nn.Linear``'s distribution).

    Both weight and bias are drawn from U(-1/sqrt(dim), 1/sqrt(dim)) (what ``nn.Linear``'s
    Kaiming-uniform default amounts to), from a generator seeded with ``seed`` alone.

    Args:
        dim: input features.
        num_classes: output classes.
        seed: the probe's seed.

    Returns:
        ``(weight [num_classes, dim], bias [num_classes])``, float32 on the CPU.
    """
    generator = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / math.sqrt(dim)
    weight = torch.empty(num_classes, dim).uniform_(-bound, bound, generator=generator)
    bias = torch.empty(num_classes).uniform_(-bound, bound, generator=generator)
    return weight, bias


def batch_order(num_train: int, epoch: int, split_seed: int) -> np.ndarray:
    """Return the order in which epoch ``epoch`` (1-based) visits the train part (all probes)."""
    return np.random.default_rng([int(split_seed), int(epoch)]).permutation(num_train)


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

    def update(self, val_loss: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Record one epoch's losses of the active probes; return which of them stop now."""
        loss = val_loss.to(torch.float64)
        improved = active & (loss < self.best - self.min_delta)
        self.best = torch.where(improved, loss, self.best)
        self.wait = torch.where(improved, 0, torch.where(active, self.wait + 1, self.wait))
        return active & ((self.wait >= self.patience) | ~torch.isfinite(loss))

    def reset(self, row: int) -> None:
        self.best[row], self.wait[row] = math.inf, 0

    def keep(self, rows: torch.Tensor) -> None:
        self.best, self.wait = self.best[rows], self.wait[rows]


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
        array = np.asarray(x)
        if array.ndim != 2 or array.shape[1] == 0:
            problems.append(
                (f"feature set {i}", f"shape {array.shape}; expected (clips, features)")
            )
        elif array.shape[0] != codes.size:
            problems.append(
                (f"feature set {i}", f"{array.shape[0]} rows; expected {codes.size}, one per label")
            )
        elif not np.isfinite(array).all():
            problems.append((f"feature set {i}", "holds NaN or infinite values"))
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


# ----------------------------------------------------------------------------- one probe


def train_probe_naive(
    x: np.ndarray,
    y: np.ndarray,
    split: Split,
    *,
    seed: int,
    config: ProbeConfig,
) -> ProbeOutcome:
    """Train and test one probe by itself: ``nn.Linear`` + ``torch.optim.Adam``.

    The reference implementation of the rules in this module's docstring; ``train_probes``
    must give the same epochs and F1 for the same seed.

    Args:
        x: n x d features (one clip per row).
        y: n class codes 0..K-1.
        split: ``(train_idx, val_idx, test_idx)`` from ``stratified_split``.
        seed: the probe's seed (sets its initial weights).
        config: the training rules.

    Returns:
        The probe's ``ProbeOutcome``.

    Raises:
        InvalidInputError: shapes that do not match, NaN features, a bad split.
        InvalidConfigError: an unavailable device.
    """
    codes, num_classes = _check_inputs([x], y, split)
    device = resolve_device(config.device)
    train_idx, val_idx, test_idx = (
        torch.as_tensor(p, dtype=torch.int64, device=device) for p in split
    )
    features = standardize_by_train(
        torch.as_tensor(np.asarray(x), device=device).float(), train_idx
    )
    labels = torch.as_tensor(codes, device=device)
    x_train, y_train = features[train_idx], labels[train_idx]
    x_val, y_val = features[val_idx], labels[val_idx]

    probe = nn.Linear(features.shape[1], num_classes).to(device)
    weight, bias = init_weights(features.shape[1], num_classes, seed)
    with torch.no_grad():
        probe.weight.copy_(weight)
        probe.bias.copy_(bias)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr)
    stopping = _EarlyStopping(
        (), patience=config.patience, min_delta=config.min_delta, device=device
    )
    active = torch.tensor(True, device=device)

    for epoch in range(1, config.max_epochs + 1):
        order = torch.as_tensor(
            batch_order(len(train_idx), epoch, config.split_seed), device=device
        )
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = F.cross_entropy(probe(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = F.cross_entropy(probe(x_val), y_val)
        if bool(stopping.update(val_loss, active)) or epoch == config.max_epochs:
            break
    with torch.no_grad():
        predicted = probe(features[test_idx]).argmax(-1)
    f1, accuracy = _metrics(predicted, labels[test_idx], num_classes)
    return ProbeOutcome(float(f1), float(accuracy), epoch, float(val_loss))


# ----------------------------------------------------------------------------- all probes
