"""Settings of the normalize service: ``NormalizeArgs`` (pydantic) in, ``NormalizeConfig`` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class NormalizeConfig:
    """How clips are brought to one loudness.

    Attributes:
        target_lufs: integrated loudness wanted, in LUFS (EBU R128: -23).
        short_policy: clips under the 400 ms gating block: ``reject`` them, or
            ``tile_measure`` (measure the clip repeated periodically to 400 ms).
        silence_policy: clips whose loudness is minus infinity (all blocks under the
            -70 LUFS absolute gate): ``reject`` them, or ``passthrough`` with gain 0.
        clipping_policy: when the gain would push the peak too high: ``limit`` lowers the gain
            so the peak stays at or below ``peak_ceiling_dbfs``; ``clip`` hard-clips to [-1, 1].
        peak_ceiling_dbfs: highest sample peak ``limit`` allows, in dBFS (<= 0).
    """

    target_lufs: float = -23.0
    short_policy: str = "reject"
    silence_policy: str = "reject"
    clipping_policy: str = "limit"
    peak_ceiling_dbfs: float = -0.1


class NormalizeArgs(BaseModel):
    """The ``normalize`` section of a run config; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_lufs: float = Field(
        default=-23.0, ge=-70.0, le=0.0,
        description="integrated loudness wanted, in LUFS (EBU R128: -23)",
    )
    short_policy: Literal["reject", "tile_measure"] = Field(
        "reject",
        description=(
            "clips under the 400 ms gating block: reject them, or tile_measure (measure the clip repeated "
            "to 400 ms)"
        ),
    )
    silence_policy: Literal["reject", "passthrough"] = Field(
        "reject",
        description=(
            "clips whose loudness is minus infinity (under the -70 LUFS gate): reject them, or passthrough "
            "with gain 0"
        ),
    )
    clipping_policy: Literal["limit", "clip"] = Field(
        "limit",
        description=(
            "when the gain would push the peak too high: limit (lower the gain to keep the peak at "
            "peak_ceiling_dbfs) or clip (hard-clip to [-1, 1])"
        ),
    )
    peak_ceiling_dbfs: float = Field(
        default=-0.1, le=0.0,
        description="highest sample peak the limit policy allows, in dBFS (<= 0)",
    )

    def to_config(self) -> NormalizeConfig:
        """Return the validated settings as a frozen ``NormalizeConfig``."""
        return NormalizeConfig(
            target_lufs=self.target_lufs,
            short_policy=self.short_policy,
            silence_policy=self.silence_policy,
            clipping_policy=self.clipping_policy,
            peak_ceiling_dbfs=self.peak_ceiling_dbfs,
        )
