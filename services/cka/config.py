"""Settings of the CKA service: pydantic ``CkaArgs`` in, frozen ``CkaConfig`` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Estimator = Literal["linear", "debiased"]

#: Every estimator, in the order rows and figure panels use.
ESTIMATORS: tuple[Estimator, ...] = ("linear", "debiased")


@dataclass(frozen=True)
class CkaConfig:
    """What the CKA service computes.

    Attributes:
        estimators: CKA estimators to report per cell: ``linear`` (Kornblith et al. 2019,
            the paper's) and/or ``debiased`` (built on the unbiased HSIC of Song et al. 2012).
        standardize: z-score every feature of both representations first (the paper does).
    """

    estimators: tuple[Estimator, ...] = ESTIMATORS
    standardize: bool = True


class CkaArgs(BaseModel):
    """The ``cka`` section of a run config; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimators: list[Estimator] = Field(default_factory=lambda: list(ESTIMATORS), min_length=1)
    standardize: bool = True

    @field_validator("estimators")
    @classmethod
    def _unique(cls, value: list[Estimator]) -> list[Estimator]:
        if len(set(value)) != len(value):
            raise ValueError(f"estimators must not repeat; got {value}")
        return value

    def to_config(self) -> CkaConfig:
        """Return the validated settings as a frozen ``CkaConfig``."""
        return CkaConfig(estimators=tuple(self.estimators), standardize=self.standardize)
