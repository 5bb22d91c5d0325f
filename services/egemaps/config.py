"""Settings of the eGeMAPS service: pydantic ``EgemapsArgs`` in, frozen ``EgemapsConfig`` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class EgemapsConfig:
    """What the eGeMAPS service computes and how widely it fans out.

    Attributes:
        feature_set: openSMILE feature set (only ``eGeMAPSv02``, the paper's 88 functionals).
        num_workers: extractor processes when run under Ray (None: one per CPU of the cluster).
    """

    feature_set: str = "eGeMAPSv02"
    num_workers: int | None = None


class EgemapsArgs(BaseModel):
    """The ``egemaps`` section of a run config; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_set: Literal["eGeMAPSv02"] = Field(
        "eGeMAPSv02",
        description="openSMILE feature set (only eGeMAPSv02, the paper's 88 functionals)",
    )
    num_workers: int | None = Field(
        default=None, ge=1,
        description="extractor processes under Ray (None: one per CPU of the cluster)",
    )

    def to_config(self) -> EgemapsConfig:
        """Return the validated settings as a frozen ``EgemapsConfig``."""
        return EgemapsConfig(feature_set=self.feature_set, num_workers=self.num_workers)
