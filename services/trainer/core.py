"""Pure pieces of the fine-tuning loop: step arithmetic, batch order, early stopping, metrics.

No I/O, no torch: everything here is plain Python / NumPy and is tested by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from serlens.shared.errors import InvalidConfigError

#: With length bucketing, clips are sorted by length inside windows of this many batches.
BUCKET_WINDOW_BATCHES = 32


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise InvalidConfigError(f"{name} must be a positive integer, got {value}")


def micro_batches_per_epoch(num_clips: int, batch_size: int) -> int:
    """Forward/backward passes per epoch (the last one may be smaller)."""
    _positive("num_clips", num_clips)
    _positive("batch_size", batch_size)
    return math.ceil(num_clips / batch_size)


def optimizer_steps_per_epoch(num_clips: int, batch_size: int, grad_accum_steps: int) -> int:
    """Optimizer steps per epoch; a last, partial accumulation at the end of an epoch still steps.

    Example: 4,662 clips, batch 16, 8 accumulation steps -> 292 micro-batches -> 37 steps.

    Raises:
        InvalidConfigError: when any argument is below 1.
    """
    _positive("grad_accum_steps", grad_accum_steps)
    return math.ceil(micro_batches_per_epoch(num_clips, batch_size) / grad_accum_steps)


def epoch_at(step: int, steps_per_epoch: int) -> float:
    """Epochs done after ``step`` optimizer steps (every epoch has the same number of steps)."""
    return step / steps_per_epoch


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    bucket_by_length: bool = False,
) -> list[list[int]]:
    """Cut one epoch into micro-batches of clip indices; a pure function of (seed, epoch).

    Clips are shuffled. With ``bucket_by_length``, windows of ``BUCKET_WINDOW_BATCHES`` batches
    are sorted by length before being cut into batches, and the batches shuffled again, so
    each batch holds clips of similar length (less padding) while the order stays random.

    Args:
        lengths: length of each clip (any unit; only their order matters).
        batch_size: clips per batch; the last batch may be smaller.
        seed: the run's seed.
        epoch: zero-based epoch index.
        bucket_by_length: group clips of similar length.

    Raises:
        InvalidConfigError: when there are no clips or ``batch_size`` is below 1.
    """
    _positive("number of clips", len(lengths))
    _positive("batch_size", batch_size)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if not bucket_by_length:
        return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    window = batch_size * BUCKET_WINDOW_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window].tolist(), key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def accumulation_groups(
    batches: Sequence[Sequence[int]], grad_accum_steps: int
) -> list[list[list[int]]]:
    """Split an epoch's micro-batches into optimizer steps (the last may be short)."""
    _positive("grad_accum_steps", grad_accum_steps)
    return [
        [list(b) for b in batches[i : i + grad_accum_steps]]
        for i in range(0, len(batches), grad_accum_steps)
    ]


class EarlyStopping:
    """Stop when a minimised value has not improved by ``min_delta`` for ``patience`` updates.

    An update improves when ``value < best - min_delta``; only then does ``best`` move. This
    is the rule of Lightning's ``EarlyStopping(mode="min")``.

    Args:
        patience: updates without improvement that trigger a stop (>= 1).
        min_delta: smallest decrease that counts as an improvement (>= 0).

    Raises:
        InvalidConfigError: on a patience below 1 or a negative ``min_delta``.
    """

    def __init__(self, *, patience: int, min_delta: float) -> None:
        if patience < 1:
            raise InvalidConfigError(f"early stopping patience must be >= 1, got {patience}")
        if not min_delta >= 0:
            raise InvalidConfigError(f"early stopping min_delta must be >= 0, got {min_delta}")
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.best_step: int | None = None
        self.bad_updates = 0
        self.stopped = False

    def update(self, value: float, step: int | None = None) -> bool:
        """Record a new value; True when training should stop.

        Args:
            value: the monitored value (validation loss). NaN never improves.
            step: where it was measured (kept as ``best_step``).
        """
        if value < self.best - self.min_delta:
            self.best, self.best_step, self.bad_updates = float(value), step, 0
        else:
            self.bad_updates += 1
        self.stopped = self.bad_updates >= self.patience
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        """Counters for a resumable checkpoint."""
        return {
            "best": self.best,
            "best_step": self.best_step,
            "bad_updates": self.bad_updates,
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters saved by ``state_dict`` (patience and min_delta stay as configured)."""
        self.best = float(state["best"])
        self.best_step = state["best_step"]
        self.bad_updates = int(state["bad_updates"])
        self.stopped = self.bad_updates >= self.patience


def classification_scores(
    y_true: Sequence[int], y_pred: Sequence[int], num_classes: int
) -> dict[str, float]:
    """Macro-F1 over all ``num_classes`` classes (absent ones count as 0) and accuracy.

    Raises:
        InvalidConfigError: when the two sequences differ in length or are empty.
    """
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise InvalidConfigError(
            f"need as many predictions as labels (> 0), got {len(y_pred)} and {len(y_true)}"
        )
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    f1 = f1_score(truth, pred, labels=list(range(num_classes)), average="macro", zero_division=0)
    return {"f1_macro": float(f1), "accuracy": float(np.mean(truth == pred))}


