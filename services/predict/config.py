"""Settings of the predict service: pydantic ``PredictArgs`` in, frozen ``PredictConfig`` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class PredictConfig:
    """How clips are batched and where the classifier runs.

    Attributes:
        batch_size: most clips per forward pass.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    batch_size: int = 8
    device: str = "auto"


class PredictArgs(BaseModel):
    """The ``predict`` settings; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(default=8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def to_config(self) -> PredictConfig:
        """The validated settings as a frozen ``PredictConfig``."""
        return PredictConfig(batch_size=self.batch_size, device=self.device)
