"""The training-progress figure: losses and validation macro-F1 by step, checkpoints marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from serlens.shared.figures import save_figure  # noqa: E402

_TRAIN_COLOR = "#9ecae1"
_TRAIN_SMOOTH_COLOR = "#2171b5"
_VAL_COLOR = "#d94801"
_F1_COLOR = "#238b45"
_ACC_COLOR = "#74c476"
_CHECKPOINT_COLOR = "#6a6a6a"
_STOP_COLOR = "#cb181d"


def _series(metrics: Sequence[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    rows = sorted((int(m["step"]), float(m["value"])) for m in metrics if m["name"] == name)
    # A resumed fit may have recorded a step twice; keep the last value of each step.
    by_step = dict(rows)
    steps = np.array(sorted(by_step), dtype=float)
    return steps, np.array([by_step[int(s)] for s in steps], dtype=float)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def plot_training(
    metrics: Sequence[dict],
    checkpoints: Sequence[int],
    stem: Path,
    *,
    title: str = "Fine-tuning progress",
    early_stop_step: int | None = None,
    dpi: int = 150,
) -> list[Path]:
    """Draw the training curves and write ``stem.png`` and ``stem.svg``.

    Top panel: training loss per optimizer step (raw and a moving average) and validation
    loss. Bottom panel: validation macro-F1 (and accuracy when present). Every checkpoint is
    a labelled vertical line in both panels; the early stop, when given, a red one.

    Args:
        metrics: rows ``{step, epoch, name, value}`` with names ``train_loss``, ``val_loss``,
            ``val_f1_macro`` and optionally ``val_accuracy`` (``TrainResult.metrics``).
        checkpoints: steps at which checkpoints were saved.
        stem: output path without suffix; its folder is created.
        title: figure title.
        early_stop_step: the step at which early stopping ended training, if it did.
        dpi: resolution of the PNG, in dots per inch.

    Returns:
        The PNG and SVG paths.
    """
    fig, (ax_loss, ax_f1) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2], "hspace": 0.08}
    )
    last_loss_step = _draw_losses(ax_loss, metrics)
    ax_loss.set_title(title, pad=22)
    _draw_scores(ax_f1, metrics)
    _mark_checkpoints(ax_loss, ax_f1, checkpoints, early_stop_step)
    ax_loss.legend(loc="upper right", fontsize=8, framealpha=0.9)
    last = max([0.0, last_loss_step, *map(float, checkpoints)])
    ax_f1.set_xlim(-0.01 * max(last, 1.0), last * 1.02 + 0.5)

    paths = save_figure(fig, stem, dpi=dpi, tight=True)
    plt.close(fig)
    return paths


def _draw_losses(ax: Any, metrics: Sequence[dict]) -> float:
    """Training loss (raw and smoothed) and validation loss; returns the last step drawn."""
    train_steps, train_loss = _series(metrics, "train_loss")
    val_steps, val_loss = _series(metrics, "val_loss")
    if train_steps.size:
        ax.plot(train_steps, train_loss, color=_TRAIN_COLOR, lw=1, label="train loss (per step)")
        window = max(1, min(10, train_steps.size // 5))
        if window > 1:
            ax.plot(train_steps, _moving_average(train_loss, window), color=_TRAIN_SMOOTH_COLOR, lw=1.8,
                    label=f"train loss ({window}-step mean)")
    if val_steps.size:
        ax.plot(val_steps, val_loss, color=_VAL_COLOR, lw=1.8, marker="o", ms=4, label="validation loss")
        best = int(np.argmin(val_loss))
        ax.scatter([val_steps[best]], [val_loss[best]], s=110, facecolors="none", edgecolors=_VAL_COLOR,
                   lw=1.5, zorder=5,
                   label=f"best validation loss ({val_loss[best]:.3f}, step {val_steps[best]:.0f})")
    ax.set_ylabel("cross-entropy loss")
    return max([0.0, *train_steps.tolist(), *val_steps.tolist()])


def _draw_scores(ax: Any, metrics: Sequence[dict]) -> None:
    """Validation macro-F1 and accuracy, on a y range fitted to them."""
    f1_steps, f1 = _series(metrics, "val_f1_macro")
    acc_steps, acc = _series(metrics, "val_accuracy")
    if f1_steps.size:
        ax.plot(f1_steps, f1, color=_F1_COLOR, lw=1.8, marker="o", ms=4, label="validation macro-F1")
    if acc_steps.size:
        ax.plot(acc_steps, acc, color=_ACC_COLOR, lw=1.2, ls="--", label="validation accuracy")
    ax.set_ylabel("score")
    ax.set_xlabel("optimizer step")
    low = float(np.nanmin(np.concatenate([f1, acc]))) if f1.size or acc.size else 0.0
    high = float(np.nanmax(np.concatenate([f1, acc]))) if f1.size or acc.size else 1.0
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, high + 0.05) if high > low else min(1.0, low + 0.1))
    if f1_steps.size or acc_steps.size:
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)


def _mark_checkpoints(ax_loss: Any, ax_f1: Any, checkpoints: Sequence[int], early_stop_step: int | None) -> None:
    """A dotted line per checkpoint (named on a top axis), a red dashed one at the early stop."""
    for ax in (ax_loss, ax_f1):
        ax.grid(True, alpha=0.3)
        for step in checkpoints:
            ax.axvline(step, color=_CHECKPOINT_COLOR, ls=":", lw=1, zorder=0)
        if early_stop_step is not None:
            ax.axvline(early_stop_step, color=_STOP_COLOR, ls="--", lw=1.4, zorder=1)
    # Checkpoints are named on a top axis, away from the curves; thinned when there are many.
    marked = sorted(set(int(c) for c in checkpoints))
    top = ax_loss.secondary_xaxis("top")
    every = max(1, -(-len(marked) // 12))
    top.set_xticks(marked, [f"ckpt {c}" if i % every == 0 else "" for i, c in enumerate(marked)],
                   fontsize=7, color=_CHECKPOINT_COLOR)
    top.tick_params(axis="x", length=3, color=_CHECKPOINT_COLOR)
    # Proxy artists so the markers explain themselves in the legend.
    ax_loss.plot([], [], color=_CHECKPOINT_COLOR, ls=":", lw=1, label="checkpoint")
    if early_stop_step is not None:
        ax_loss.plot([], [], color=_STOP_COLOR, ls="--", lw=1.4, label=f"early stop (step {early_stop_step})")
