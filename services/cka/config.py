"""Settings of the CKA service: pydantic ``CkaArgs`` in, frozen ``CkaConfig`` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Estimator = Literal["linear", "debiased"]
Scheme = Literal["auto", "plain", "within_speaker"]
Confound = Literal["speaker", "gender", "sentence"]
ColourScale = Literal["shared", "unit"]

#: Every estimator, in the order rows and figure panels use.
ESTIMATORS: tuple[Estimator, ...] = ("linear", "debiased")

#: Confounds regressed out for partial CKA by default (emotion intensity is signal, not one).
DEFAULT_CONFOUNDS: tuple[Confound, ...] = ("speaker", "gender", "sentence")


@dataclass(frozen=True)
class CkaConfig:
    """What the CKA service computes.

    Attributes:
        estimators: CKA estimators to report per cell: ``linear`` (Kornblith et al. 2019,
            the paper's) and/or ``debiased`` (built on the unbiased HSIC of Song et al. 2012).
        standardize: z-score every feature of both representations first (the paper does).
        permutations: m, permutations per test (0: no tests); p = (b + 1) / (m + 1).
        scheme: ``plain`` (any clip with any clip), ``within_speaker`` (clips move only
            within their speaker), or ``auto`` (within speaker whenever speakers are known).
        q_threshold: BH false-discovery rate at which a cell counts as distinguishable from
            the null (figures and report).
        confounds: factors regressed out of both views for partial CKA (empty: none).
        colour_scale: ``shared`` (one scale over the panels of a figure) or ``unit`` ([0, 1]).
        level: coverage of the speaker-jackknife intervals.
        seed: seed of the permutations.
        gram_dtype: ``float32`` (fast, ~1e-6 relative) or ``float64`` for the permutation
            products; observed values, intervals and partial CKA are always float64.
    """

    estimators: tuple[Estimator, ...] = ESTIMATORS
    standardize: bool = True
    permutations: int = 10_000
    scheme: Scheme = "auto"
    q_threshold: float = 0.05
    confounds: tuple[Confound, ...] = DEFAULT_CONFOUNDS
    colour_scale: ColourScale = "shared"
    level: float = 0.95
    seed: int = 0
    gram_dtype: Literal["float32", "float64"] = "float32"


class CkaArgs(BaseModel):
    """The ``cka`` section of a run config; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimators: list[Estimator] = Field(
        default_factory=lambda: list(ESTIMATORS), min_length=1,
        description="CKA estimators per cell: linear (Kornblith et al. 2019, the paper's) and/or debiased",
    )
    standardize: bool = Field(True, description="z-score every feature of both representations first (the paper does)")
    permutations: int = Field(
        default=10_000, ge=0, le=1_000_000,
        description="permutations per test (0: no tests); p = (b + 1) / (m + 1)",
    )
    scheme: Scheme = Field("auto", description="permutations: plain (any clips), within_speaker, or auto "
                                               "(within speaker when speakers are known)")
    q_threshold: float = Field(
        default=0.05, gt=0, lt=1,
        description="Benjamini-Hochberg false-discovery rate at which a cell counts as distinguishable from the null",
    )
    confounds: list[Confound] = Field(
        default_factory=lambda: list(DEFAULT_CONFOUNDS),
        description="factors regressed out of both views for partial CKA (empty: none)",
    )
    colour_scale: ColourScale = Field(
        "shared",
        description="shared (one scale over the panels of a figure) or unit ([0, 1])",
    )
    level: float = Field(default=0.95, gt=0, lt=1, description="coverage of the speaker-jackknife intervals")
    seed: int = Field(0, description="seed of the permutations")
    gram_dtype: Literal["float32", "float64"] = Field(
        "float32",
        description="float32 (fast, ~1e-6 relative) or float64 for the permutation products",
    )

    @field_validator("estimators", "confounds")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"entries must not repeat; got {value}")
        return value

    def to_config(self) -> CkaConfig:
        """Return the validated settings as a frozen ``CkaConfig``."""
        return CkaConfig(estimators=tuple(self.estimators), standardize=self.standardize,
                         permutations=self.permutations, scheme=self.scheme, q_threshold=self.q_threshold,
                         confounds=tuple(self.confounds), colour_scale=self.colour_scale, level=self.level,
                         seed=self.seed, gram_dtype=self.gram_dtype)
