"""Settings of the probe service: pydantic ``ProbeArgs`` in, frozen ``ProbeConfig`` out.

The training defaults are the paper's (section 2.3.4): 10 seeds, mini-batches of 16, Adam with
a learning rate of 1e-2, up to 1000 epochs (PyTorch Lightning's default), early stopping on
the validation loss with a minimum improvement of 0.025 and a patience of 5 epochs. The
evaluation protocol is ``paper`` (one label-stratified 80/10/10 split of subset 3, kept to
reproduce the paper) or ``grouped_cv`` (speaker-grouped K-fold: every clip predicted once by
probes that never saw its speaker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serlens.probe.ridge import DEFAULT_ALPHAS

Protocol = Literal["paper", "grouped_cv"]


@dataclass(frozen=True)
class ProbeConfig:
    """How every probe is trained and evaluated.

    Attributes:
        seeds: probes per feature set; seed i (0, 1, ...) sets initial weights and batch order.
        batch_size: clips per mini-batch.
        lr: Adam learning rate.
        max_epochs: epochs at most per probe.
        patience: epochs without a large enough improvement of the validation loss before stopping.
        min_delta: smallest decrease of the validation loss that counts as an improvement (nats).
        split: train, validation and test fractions of the clips (``paper`` protocol).
        split_seed: seed of the split or folds, and (with the probe's seed) of the batch order.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        protocol: ``paper`` (one stratified split) or ``grouped_cv`` (speaker-grouped K-fold).
        folds: K of the speaker-grouped folds (``grouped_cv`` and the ridge probes); with fewer
            speakers than K, one fold per speaker (leave-one-speaker-out).
        val_fraction: share of the training speakers held out for early stopping (``grouped_cv``).
        mlp: also train MLP probes (one hidden ReLU layer) and their control task.
        mlp_hidden: hidden width of the MLP probes.
        mlp_weight_decay: L2 weight decay of the MLP probes (Adam's ``weight_decay``).
        ridge: run the per-eGeMAPS-feature ridge probes.
        ridge_alphas: α grid of the ridge probes (nested grouped CV picks one per fold and target).
        interval_level: coverage of the speaker-level intervals (jackknife over speakers).
        control_seed: seed of the control tasks' permutations.
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
    protocol: Protocol = "grouped_cv"
    folds: int = 5
    val_fraction: float = 0.125
    mlp: bool = False
    mlp_hidden: int = 256
    mlp_weight_decay: float = 1e-3
    ridge: bool = True
    ridge_alphas: tuple[float, ...] = DEFAULT_ALPHAS
    interval_level: float = 0.95
    control_seed: int = 0


class ProbeArgs(BaseModel):
    """The ``probe`` section of a run config; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: int = Field(
        default=10, ge=1,
        description="probes per feature set; seed i sets initial weights and batch order",
    )
    batch_size: int = Field(default=16, ge=1, description="clips per mini-batch")
    lr: float = Field(default=1e-2, gt=0, description="Adam learning rate")
    max_epochs: int = Field(default=1000, ge=1, description="epochs at most per probe")
    patience: int = Field(
        default=5, ge=1,
        description="epochs without a large enough improvement of the validation loss before stopping",
    )
    min_delta: float = Field(
        default=0.025, ge=0,
        description="smallest decrease of the validation loss that counts as an improvement (nats)",
    )
    split: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1),
        description="train, validation and test fractions of the clips (paper protocol)",
    )
    split_seed: int = Field(
        default=0, ge=0,
        description="seed of the split or folds, and (with the probe's seed) of the batch order",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (CUDA when available), cpu or cuda")
    protocol: Protocol = Field(
        "grouped_cv",
        description="paper (one stratified split) or grouped_cv (speaker-grouped K-fold)",
    )
    folds: int = Field(default=5, ge=3, description="K of the speaker-grouped folds (grouped_cv, ridge probes); "
                                                   "fewer speakers than K: leave-one-speaker-out")
    val_fraction: float = Field(
        default=0.125, gt=0, lt=0.5,
        description="share of the training speakers held out for early stopping (grouped_cv)",
    )
    mlp: bool = Field(False, description="also train MLP probes (one hidden ReLU layer) and their control task")
    mlp_hidden: int = Field(default=256, ge=1, description="hidden width of the MLP probes")
    mlp_weight_decay: float = Field(
        default=1e-3, ge=0,
        description="L2 weight decay of the MLP probes (Adam's weight_decay)",
    )
    ridge: bool = Field(True, description="run the per-eGeMAPS-feature ridge probes")
    ridge_alphas: tuple[float, ...] = Field(
        DEFAULT_ALPHAS,
        description="alpha grid of the ridge probes (nested grouped CV picks one per fold and target)",
    )
    interval_level: float = Field(
        default=0.95, gt=0, lt=1,
        description="coverage of the speaker-level intervals (jackknife over speakers)",
    )
    control_seed: int = Field(default=0, ge=0, description="seed of the control tasks' permutations")

    @field_validator("split")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not 0 < f < 1 for f in value) or not math.isclose(sum(value), 1.0, abs_tol=1e-9):
            raise ValueError(f"split must be three fractions in (0, 1) that sum to 1; got {value}")
        return value

    @field_validator("ridge_alphas")
    @classmethod
    def _alphas(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or min(value) <= 0:
            raise ValueError(f"ridge_alphas must be positive values; got {value}")
        return value

    def to_config(self) -> ProbeConfig:
        """Return the validated settings as a frozen ``ProbeConfig``."""
        return ProbeConfig(**self.model_dump())
