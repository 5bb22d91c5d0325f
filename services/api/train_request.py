"""What ``POST /train`` accepts: training hyper-parameters and a dataset name, nothing else.

The dataset name picks a run config from the operator's allow-list (``ApiArgs.train_datasets``);
the posted hyper-parameters are applied over its ``train`` section. Paths, model ids, tracking
URIs and dataset sizes are the operator's, never the caller's; every number is bounded.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from serlens.api.config import DATASET_NAME_PATTERN, ApiConfig
from serlens.pipeline.config import load_study_args
from serlens.shared.errors import InvalidInputError
from serlens.shared.keys import config_hash


class TrainHyperparameters(BaseModel):
    """The fine-tuning settings a caller may choose (``TrainArgs``' fields, bounded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int | None = Field(default=None, ge=1, le=64)
    grad_accum_steps: int | None = Field(default=None, ge=1, le=64)
    lr: float | None = Field(default=None, gt=0, le=1e-2)
    weight_decay: float | None = Field(default=None, ge=0, le=1)
    max_epochs: int | None = Field(default=None, ge=1, le=100)
    max_steps: int | None = Field(default=None, ge=1, le=100_000)
    eval_every_steps: int | None = Field(default=None, ge=1, le=10_000)
    checkpoint_every_steps: int | None = Field(default=None, ge=1, le=100_000)
    early_stopping_patience: int | None = Field(default=None, ge=1, le=100)
    early_stopping_min_delta: float | None = Field(default=None, ge=0, le=10)
    freeze_feature_encoder: bool | None = None
    length_bucketing: bool | None = None
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class TrainRequest(BaseModel):
    """The body of ``POST /train``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(
        pattern=DATASET_NAME_PATTERN,
        description="a dataset name the API offers (GET /train/datasets)",
    )
    train: TrainHyperparameters = Field(
        default=TrainHyperparameters(), description="hyper-parameters over the dataset's run config"
    )


def prepare_config(request: TrainRequest, config: ApiConfig) -> tuple[Path, str]:
    """Resolve a request into a run config and write it where the job will read it.

    Args:
        request: the posted body.
        config: the API's settings (allow-list, workdir).

    Returns:
        ``(path, request_key)``: ``<workdir>/train-requests/<key>.yaml`` and the hash of the
        resolved config (identical requests share it, and so their fine-tuning run).

    Raises:
        InvalidInputError: a dataset not on the allow-list (422).
        InvalidConfigError: a combination the run config refuses.
    """
    source = config.train_datasets.get(request.dataset)
    if source is None:
        raise InvalidInputError(
            [("dataset", f"{request.dataset!r} is not offered; offered: {sorted(config.train_datasets)}")],
            source="POST /train",
        )
    chosen = request.train.model_dump(exclude_none=True)
    overrides = [f"train.{key}={json.dumps(value)}" for key, value in sorted(chosen.items())]
    text = load_study_args(source, overrides).to_yaml()
    key = config_hash("train-request", text)
    path = config.paths.train_requests / f"{key}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path, key
