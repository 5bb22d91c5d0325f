"""Settings of the probe service: pydantic ``ProbeArgs`` in, frozen ``ProbeConfig`` out.

The defaults are the paper's (section 2.3.4): 10 seeds, mini-batches of 16, Adam with a
learning rate of 1e-2, up to 1000 epochs (PyTorch Lightning's default), early stopping on the
validation loss with a minimum improvement of 0.025 and a patience of 5 epochs, and one
80/10/10 split of subset 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass(frozen=True)
class ProbeConfig:
    """How every linear probe is trained and evaluated.

    Attributes:
        seeds: probes per feature set; seed i (0, 1, ...) sets the linear layer's initial weights.
        batch_size: clips per mini-batch.
        lr: Adam learning rate.
        max_epochs: epochs at most per probe.
        patience: epochs without a large enough improvement of the validation loss before stopping.
        min_delta: smallest decrease of the validation loss that counts as an improvement (nats).
        split: train, validation and test fractions of the clips (label-stratified).
        split_seed: seed of the split and of the per-epoch mini-batch order.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    seeds: int = 10
    batch_size: int = 16
    lr: float = 1e-2
    max_epochs: int = 1000
    patience: int = 5
    min_delta: float = 0.025
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ProbeArgs(BaseModel):
    """The ``probe`` section of a run config; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: int = Field(default=10, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=1e-2, gt=0)
    max_epochs: int = Field(default=1000, ge=1)
    patience: int = Field(default=5, ge=1)
    min_delta: float = Field(default=0.025, ge=0)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("split")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not 0 < f < 1 for f in value) or not math.isclose(sum(value), 1.0, abs_tol=1e-9):
            raise ValueError(f"split must be three fractions in (0, 1) that sum to 1; got {value}")
        return value

    def to_config(self) -> ProbeConfig:
        """Return the validated settings as a frozen ``ProbeConfig``."""
        return ProbeConfig(
            seeds=self.seeds,
            batch_size=self.batch_size,
            lr=self.lr,
            max_epochs=self.max_epochs,
            patience=self.patience,
            min_delta=self.min_delta,
            split=self.split,
            split_seed=self.split_seed,
            device=self.device,
        )
