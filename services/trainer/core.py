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


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise InvalidConfigError(f"{name} must be a positive integer, got {value}")


def optimizer_steps_per_epoch(num_clips: int, batch_size: int, grad_accum_steps: int) -> int:
    """Optimizer steps per epoch; a last, partial step at the end of an epoch still steps.

    A step takes ``batch_size * grad_accum_steps`` clips (the effective batch). Example:
    4,662 clips, batch 16, 8 accumulation steps -> 128 clips per step -> 37 steps.

    Raises:
        InvalidConfigError: when any argument is below 1.
    """
    _positive("num_clips", num_clips)
    _positive("batch_size", batch_size)
    _positive("grad_accum_steps", grad_accum_steps)
    return math.ceil(num_clips / (batch_size * grad_accum_steps))


def epoch_at(step: int, steps_per_epoch: int) -> float:
    """Epochs done after ``step`` optimizer steps (every epoch has the same number of steps)."""
    return step / steps_per_epoch


def epoch_steps(lengths: Sequence[int], effective_batch_size: int, *, seed: int, epoch: int) -> list[list[int]]:
    """Cut one shuffled epoch into optimizer steps of clip indices; a pure function of (seed, epoch).

    Only the effective batch shapes the steps, so any micro-batch size with the same effective
    batch trains on the same clips at every step.

    Args:
        lengths: one entry per clip (only their number matters here).
        effective_batch_size: clips per optimizer step; the last step may be smaller.
        seed: the run's seed.
        epoch: zero-based epoch index.

    Raises:
        InvalidConfigError: when there are no clips or ``effective_batch_size`` is below 1.
    """
    _positive("number of clips", len(lengths))
    _positive("effective_batch_size", effective_batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    return [order[i : i + effective_batch_size].tolist() for i in range(0, len(order), effective_batch_size)]


def micro_batches(
    step_clips: Sequence[int], batch_size: int, lengths: Sequence[int], *, bucket_by_length: bool = False
) -> list[list[int]]:
    """Cut one optimizer step's clips into micro-batches of at most ``batch_size``.

    With ``bucket_by_length`` the step's clips are sorted by length first, so each micro-batch
    holds clips of similar length (less padding). The step's clips, and so its gradient, stay
    the same; only the order of the floating-point sums changes.

    Raises:
        InvalidConfigError: when ``batch_size`` is below 1.
    """
    _positive("batch_size", batch_size)
    clips = sorted(step_clips, key=lambda i: lengths[i]) if bucket_by_length else list(step_clips)
    return [clips[i : i + batch_size] for i in range(0, len(clips), batch_size)]


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


