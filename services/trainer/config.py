"""Fine-tuning settings: pydantic ``TrainArgs`` (validated once) -> frozen ``TrainConfig``.

Defaults follow the paper (section 2.3.2): batch 16, AdamW at 1e-5, cross-entropy,
validation every 10 optimizer steps, early stopping after 5 validations without a
0.025 drop in validation loss, a checkpoint every 50 steps, at most 50 epochs. Gradient
accumulation (8) makes the effective batch 128, so 350 steps are about 9.5 epochs of the
4,662 training clips of CREMA-D subset 1.

The trajectory depends on the effective batch (``batch_size * grad_accum_steps``), not on how
it is split: micro-batch 16 x 8 and 32 x 4 train on the same clips at every step, so a bigger
GPU can take bigger micro-batches (and a resume may change the split).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """Validated fine-tuning settings; see ``TrainArgs`` for each field's meaning."""

    batch_size: int
    grad_accum_steps: int
    lr: float
    weight_decay: float
    max_epochs: int
    max_steps: int | None
    eval_every_steps: int
    checkpoint_every_steps: int
    early_stopping_patience: int
    early_stopping_min_delta: float
    freeze_feature_encoder: bool
    fast_attention: bool
    compile_layers: bool
    length_bucketing: bool
    seed: int
    device: Device
    precision: Precision
    num_loader_workers: int
    log_checkpoints_to_mlflow: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict (MLflow params, the resume state)."""
        return asdict(self)

    @property
    def effective_batch_size(self) -> int:
        """Clips per optimizer step."""
        return self.batch_size * self.grad_accum_steps


class TrainArgs(BaseModel):
    """Fine-tuning settings as read from YAML; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # batching: the paper's batch of 16 on an A100; accumulation gives 128 clips per step
    batch_size: int = Field(16, ge=1, description="micro-batch: clips per forward/backward pass (memory, speed)")
    grad_accum_steps: int = Field(8, ge=1, description="micro-batches summed into one optimizer step")
    # optimizer: AdamW
    lr: float = Field(1e-5, gt=0, description="learning rate, constant")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay")
    # how long
    max_epochs: int = Field(50, ge=1, description="upper bound on passes over the training set")
    max_steps: int | None = Field(None, ge=1, description="optional upper bound on optimizer steps")
    # validation, early stopping and checkpoints, all counted in optimizer steps
    eval_every_steps: int = Field(10, ge=1, description="validate every N optimizer steps")
    checkpoint_every_steps: int = Field(50, ge=1, description="save a checkpoint every N optimizer steps")
    early_stopping_patience: int = Field(5, ge=1, description="validations without improvement before stopping")
    early_stopping_min_delta: float = Field(0.025, ge=0, description="smallest val-loss drop that counts")
    # model
    freeze_feature_encoder: bool = Field(True, description="keep the CNN feature encoder fixed, as usual for WavLM")
    fast_attention: bool = Field(True, description="WavLM through serlens' fused-attention forward (SDPA, its "
                                 "own attention-dropout draws); other encoders keep Hugging Face's")
    compile_layers: bool = Field(False, description="torch.compile each encoder layer of the fast forward "
                                 "(worth it on a GPU; needs a C++ compiler)")
    # data order
    length_bucketing: bool = Field(
        False,
        description="sort each step's clips by length into micro-batches (less padding)",
    )
    seed: int = Field(0, description="seeds the head, dropout, SpecAugment masks and the batch order")
    # hardware
    device: Device = Field("auto", description="auto = CUDA when available, else CPU")
    precision: Precision = Field("auto", description="auto = bf16 autocast on CUDA, fp32 on CPU")
    num_loader_workers: int = Field(0, ge=0, description="audio-reading worker processes (0 = in process)")
    # tracking
    log_checkpoints_to_mlflow: bool = Field(True, description="upload every checkpoint as run artifacts")

    def to_config(self) -> TrainConfig:
        """Freeze into the config the service takes."""
        return TrainConfig(**self.model_dump())
