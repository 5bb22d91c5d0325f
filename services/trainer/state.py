"""What a fit carries from step to step (``TrainState``) and what it hands back (``TrainResult``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from serlens.trainer import core


@dataclass(frozen=True)
class CheckpointInfo:
    """A saved checkpoint.

    Attributes:
        step: optimizer steps done (0 = the pretrained encoder and the initial head).
        local_path: the checkpoint folder.
        uri: ``runs:/<run_id>/checkpoints/step-NNNNNN`` when logged to MLflow, else the
            folder's file URI.
        epoch: epochs done at ``step``.
        train_loss: mean training loss over the optimizer steps since the previous checkpoint
            (None for checkpoint 0).
        val_loss: validation cross-entropy at ``step``.
        val_f1_macro: validation macro-F1 at ``step``.
    """

    step: int
    local_path: str
    uri: str
    epoch: float
    train_loss: float | None
    val_loss: float
    val_f1_macro: float


@dataclass(frozen=True)
class TrainResult:
    """What a fit produced.

    Attributes:
        run_id: the MLflow run.
        checkpoints: every checkpoint, by step.
        metrics: rows ``{step, epoch, name, value, timestamp_ms}`` for ``train_loss``, ``lr``
            (every step), ``val_loss``, ``val_f1_macro``, ``val_accuracy`` (every validation).
        stopped_early: early stopping ended the fit.
        steps: optimizer steps done.
        epochs: epochs done.
        seconds: wall-clock time spent fitting, summed over resumed sessions, in seconds.
    """

    run_id: str
    checkpoints: tuple[CheckpointInfo, ...]
    metrics: tuple[dict, ...]
    stopped_early: bool
    steps: int
    epochs: float
    seconds: float


@dataclass
class TrainState:
    """Everything a fit changes as it runs; every checkpoint saves all of it.

    Attributes:
        steps_per_epoch: optimizer steps per epoch (fixed for the fit).
        early: early-stopping counters and the best validation loss.
        run_id: the MLflow run the fit logs to.
        step: optimizer steps done.
        metrics: every metric row so far (the run's full history, replayed on resume).
        checkpoints: every checkpoint saved so far, as ``CheckpointInfo`` fields less ``uri``.
        seconds_before: seconds spent in earlier sessions of this fit.
        started: ``time.perf_counter()`` when this session started.
        unsettled: ``(step, training loss still on the device, learning rate)`` per step not yet
            recorded; ``settle`` reads them in one host sync when a validation, a checkpoint
            or the end needs them (not one sync per step).
    """

    steps_per_epoch: int
    early: core.EarlyStopping
    run_id: str = ""
    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    seconds_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    unsettled: list[tuple[int, torch.Tensor, float]] = field(default_factory=list)

    @property
    def epoch(self) -> float:
        """Epochs done."""
        return core.epoch_at(self.step, self.steps_per_epoch)

    @property
    def seconds(self) -> float:
        """Seconds spent fitting, this session and earlier ones together."""
        return self.seconds_before + time.perf_counter() - self.started

    def record(self, name: str, value: float, step: int | None = None) -> dict[str, Any]:
        """Append one metric row at ``step`` (default: now) and return it."""
        at = self.step if step is None else step
        row = {"step": at, "epoch": core.epoch_at(at, self.steps_per_epoch), "name": name,
               "value": float(value), "timestamp_ms": int(time.time() * 1000)}
        self.metrics.append(row)
        return row

    def settle(self) -> list[dict[str, Any]]:
        """Record ``train_loss`` and ``lr`` of the unsettled steps (one host sync); return the rows."""
        if not self.unsettled:
            return []
        losses = torch.stack([loss for _, loss, _ in self.unsettled]).cpu().tolist()
        rows = []
        for (step, _, lr), loss in zip(self.unsettled, losses, strict=True):
            rows += [self.record("train_loss", loss, step), self.record("lr", lr, step)]
        self.unsettled.clear()
        return rows

    def mean_train_loss_since_last_checkpoint(self) -> float | None:
        """Mean training loss of the steps after the previous checkpoint, up to now."""
        since = self.checkpoints[-1]["step"] if self.checkpoints else self.step
        losses = [m["value"] for m in self.metrics if m["name"] == "train_loss" and since < m["step"] <= self.step]
        return float(np.mean(losses)) if losses else None

    def to_dict(self) -> dict[str, Any]:
        """The fields a checkpoint saves (``trainer_state.pt``)."""
        return {"step": self.step, "run_id": self.run_id, "metrics": self.metrics,
                "checkpoints": self.checkpoints, "early_stopping": self.early.state_dict(),
                "seconds": self.seconds}

    def load_dict(self, saved: dict[str, Any]) -> None:
        """Continue from the fields of a saved ``to_dict`` (the clock restarts now)."""
        self.step, self.run_id = int(saved["step"]), str(saved["run_id"])
        self.metrics = [dict(m) for m in saved["metrics"]]
        self.checkpoints = [dict(c) for c in saved["checkpoints"]]
        self.early.load_state_dict(saved["early_stopping"])
        self.seconds_before, self.started = float(saved["seconds"]), time.perf_counter()
