"""Settings of the HTTP API: pydantic ``ApiArgs`` (the Serve args) -> frozen ``ApiConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from serlens.api.promotions import served_model
from serlens.egemaps.config import EgemapsArgs
from serlens.embed.config import EmbedArgs
from serlens.normalize.config import NormalizeArgs
from serlens.predict.config import PredictArgs
from serlens.shared.settings import api_tokens_file, default_workdir
from serlens.shared.sql import SqlLimits
from serlens.shared.workdir import Workdir

#: The deployments of the application, by Serve name.
DeploymentName = Literal["Ingress", "Normalize", "Egemaps", "Embed", "Predict"]

#: A dataset name in ``train_datasets`` (and in ``POST /train``).
DATASET_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

#: The custom Ray resource a training job's driver asks for; worker nodes offer it, the head
#: does not, so drivers never run on the head.
TRAIN_DRIVER_RESOURCE = "serlens_train_driver"

DatasetName = Annotated[str, StringConstraints(pattern=DATASET_NAME_PATTERN)]


@dataclass(frozen=True)
class ApiConfig:
    """Validated settings of the API (see ``ApiArgs`` for each field's meaning).

    Attributes:
        workdir: the run folder whose feature store, checkpoints and audio the API uses.
        tokens_file: the token file (SHA-256 digests, names and scopes).
        max_upload_bytes: largest accepted upload, in bytes.
        sql_limits: every limit of a ``/sql`` query (rows, time, memory, threads, spill,
            response bytes, concurrency).
        model_max_duration_s: longest clip ``/embed`` and ``/predict`` accept, in seconds
            (the encoder's memory grows with the square of the length).
    """

    workdir: Path
    model: str | None
    tokens_file: Path
    max_upload_bytes: int
    max_duration_s: float
    sql_max_rows: int
    sql_timeout_s: float
    embed_max_batch_size: int
    embed_batch_wait_timeout_s: float
    max_train_jobs: int
    train_datasets: dict[str, str]
    train_driver_num_cpus: float
    train_driver_resources: dict[str, float]
    normalize: NormalizeArgs
    egemaps: EgemapsArgs
    embed: EmbedArgs
    predict: PredictArgs
    sql_limits: SqlLimits
    model_max_duration_s: float
    deployment_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def paths(self) -> Workdir:
        """The workdir's layout (store, checkpoints, audio, train requests)."""
        return Workdir(self.workdir)


class ApiArgs(BaseModel):
    """The ``args`` of the Serve application (``serve run serlens.api.app:build_app k=v``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workdir: str | None = None  # None: $SERLENS_WORKDIR, else ./serlens-work
    # The model /embed and /predict serve by default (a folder, hub id or models:/ URI); None: the promoted
    # checkpoint (promotions).
    model: str | None = None
    # Hashed API tokens; None: $SERLENS_API_TOKENS_FILE, else <workdir>/api-tokens.yaml.
    tokens_file: str | None = None
    max_upload_mb: float = Field(25, gt=0, le=1024)  # largest upload, MiB
    max_duration_s: float = Field(600, gt=0, le=3600)  # longest audio, seconds
    sql_max_rows: int = Field(10_000, ge=1, le=1_000_000)
    sql_timeout_s: float = Field(10, gt=0, le=600)
    embed_max_batch_size: int = Field(8, ge=1, le=256)
    embed_batch_wait_timeout_s: float = Field(0.05, ge=0, le=10)
    # eGeMAPS extractor replicas; None: one per CPU of the cluster when the app is built (at most 8).
    egemaps_replicas: int | None = Field(None, ge=1, le=256)
    # GPUs per Embed and Predict replica; None: 0.5 if the cluster has a GPU when the app is built.
    model_gpus: float | None = Field(None, ge=0, le=8)
    # Training jobs: at most this many at once (429 beyond), datasets by name -> a run config
    # (a path or a shipped config's name) chosen by the operator, and the driver's resources.
    max_train_jobs: int = Field(2, ge=1, le=64)
    train_datasets: dict[DatasetName, str] = Field(default_factory=lambda: {"demo": "demo"})
    train_driver_num_cpus: float = Field(1, ge=0, le=64)
    train_driver_resources: dict[str, float] = Field(
        default_factory=lambda: {TRAIN_DRIVER_RESOURCE: 1.0}
    )
    # Serve options per deployment, merged into each app's defaults (e.g. ray_actor_options.memory).
    deployment_options: dict[DeploymentName, dict[str, Any]] = Field(default_factory=dict)
    # The services' own sections, as in a run config (defaults: the study's defaults).
    normalize: NormalizeArgs = Field(default_factory=NormalizeArgs)
    egemaps: EgemapsArgs = Field(default_factory=EgemapsArgs)
    embed: EmbedArgs = Field(default_factory=EmbedArgs)
    predict: PredictArgs = Field(default_factory=PredictArgs)
    # Hostile callers: the /sql sandbox's limits (serlens.shared.sql.SqlLimits) and the longest
    # clip the encoder sees (its memory grows with the square of the clip length).
    sql_memory_mb: int = Field(1024, ge=128)  # resident memory of one query's process, MiB
    sql_threads: int = Field(1, ge=1)  # DuckDB threads per query
    sql_spill_mb: int = Field(1024, ge=1)  # DuckDB spill per query, MiB
    sql_max_response_mb: float = Field(32, gt=0)  # largest /sql result, MiB
    sql_max_concurrent: int = Field(2, ge=1)  # /sql queries at once per replica; more: 503
    model_max_duration_s: float = Field(60, gt=0)  # longest clip /embed and /predict accept, s

    def to_config(self) -> ApiConfig:
        """The validated settings as a frozen ``ApiConfig`` (paths made absolute)."""
        workdir = (Path(self.workdir) if self.workdir else default_workdir()).expanduser().resolve()
        tokens = Path(self.tokens_file) if self.tokens_file else api_tokens_file()
        return ApiConfig(
            workdir=workdir,
            model=served_model(self.model, workdir),
            tokens_file=(tokens or Workdir(workdir).api_tokens).expanduser().resolve(),
            max_upload_bytes=int(self.max_upload_mb * 1024 * 1024),
            max_duration_s=self.max_duration_s,
            sql_max_rows=self.sql_max_rows,
            sql_timeout_s=self.sql_timeout_s,
            embed_max_batch_size=self.embed_max_batch_size,
            embed_batch_wait_timeout_s=self.embed_batch_wait_timeout_s,
            max_train_jobs=self.max_train_jobs,
            train_datasets=dict(self.train_datasets),
            train_driver_num_cpus=self.train_driver_num_cpus,
            train_driver_resources=dict(self.train_driver_resources),
            normalize=self.normalize,
            egemaps=self.egemaps,
            embed=self.embed,
            predict=self.predict,
            sql_limits=SqlLimits(
                max_rows=self.sql_max_rows, timeout_s=self.sql_timeout_s, memory_mb=self.sql_memory_mb,
                threads=self.sql_threads, spill_mb=self.sql_spill_mb, max_concurrent=self.sql_max_concurrent,
                max_response_bytes=int(self.sql_max_response_mb * 2**20),
            ),
            model_max_duration_s=self.model_max_duration_s,
            deployment_options={k: dict(v) for k, v in self.deployment_options.items()},
        )

