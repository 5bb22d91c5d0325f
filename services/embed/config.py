"""Settings of the embedding service: pydantic ``EmbedArgs`` in, frozen ``EmbedConfig`` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass(frozen=True)
class EmbedConfig:
    """How clips are batched, which hidden states are kept, and where the model runs.

    Attributes:
        batch_size: most clips per forward pass; None: as many as ``max_batch_audio_s`` holds.
        max_batch_audio_s: most padded audio per forward pass, in seconds (clips x longest
            clip), to bound memory; batches are planned by the encoder frames this amounts to.
        layers: hidden-state indices to keep (0 = CNN feature projection + positional
            convolution, i = output of transformer layer i; see ``HIDDEN_STATE_DEFINITION``);
            None keeps all of them.
        pooling: how frames are reduced to one vector (``mean`` over valid frames).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        precision: ``fp32``, or ``bf16`` autocast (CUDA only; CPU always runs fp32).
        fast: the fast path: ``FastWavLM`` (fused attention; Hugging Face's own forward for
            models it does not cover) fed by ``serlens.embed.feed`` (lengths, not masks; per-clip
            standardisation on the device; pinned buffers and overlap on CUDA). False: the
            previous path (Hugging Face forward, masks and standardisation built on the host).
        compile_layers: run each encoder layer under ``torch.compile`` (fast path only; costs
            tens of seconds of warm-up per new input shape family).
    """

    batch_size: int | None = None
    max_batch_audio_s: float = 240.0
    layers: tuple[int, ...] | None = None
    pooling: str = "mean"
    device: str = "auto"
    precision: str = "fp32"
    fast: bool = True
    compile_layers: bool = False


class EmbedArgs(BaseModel):
    """The ``embed`` section of a run config; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int | None = Field(
        default=None, ge=1,
        description="most clips per forward pass; None: as many as max_batch_audio_s holds",
    )
    max_batch_audio_s: float = Field(
        default=240.0, gt=0,
        description="most padded audio per forward pass, in seconds (clips x longest clip), to bound memory",
    )
    layers: list[int] | None = Field(
        None,
        description=(
            "hidden-state indices to keep (0 = CNN feature projection, i = output of transformer layer i); "
            "None: all"
        ),
    )
    pooling: Literal["mean"] = Field(
        "mean",
        description="how frames are reduced to one vector (mean over valid frames)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (CUDA when available), cpu or cuda")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="fp32, or bf16 autocast (CUDA only; CPU always runs fp32)",
    )
    fast: bool = Field(
        True,
        description="the fast path (fused attention, lengths instead of masks); False: Hugging Face's own forward",
    )
    compile_layers: bool = Field(
        False,
        description=(
            "run each encoder layer under torch.compile (fast path only; tens of seconds of warm-up per "
            "input shape family)"
        ),
    )

    @field_validator("layers")
    @classmethod
    def _layers_distinct_and_non_negative(cls, layers: list[int] | None) -> list[int] | None:
        # The upper bound depends on the model, so the service checks it once loaded.
        if layers is None:
            return None
        if not layers:
            raise ValueError("empty list; use null for every hidden state")
        negative = [i for i in layers if i < 0]
        if negative:
            raise ValueError(f"negative layer index {negative}; 0 is the CNN feature projection")
        if len(set(layers)) != len(layers):
            raise ValueError(f"repeated layer index in {layers}")
        return layers

    def to_config(self) -> EmbedConfig:
        """Return the validated settings as a frozen ``EmbedConfig``."""
        return EmbedConfig(
            batch_size=self.batch_size,
            max_batch_audio_s=self.max_batch_audio_s,
            layers=tuple(self.layers) if self.layers is not None else None,
            pooling=self.pooling,
            device=self.device,
            precision=self.precision,
            fast=self.fast,
            compile_layers=self.compile_layers,
        )
