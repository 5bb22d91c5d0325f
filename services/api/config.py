"""Settings of the HTTP API: pydantic ``ApiArgs`` (the Serve args) -> frozen ``ApiConfig``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from serlens.egemaps.config import EgemapsArgs
from serlens.embed.config import EmbedArgs
from serlens.normalize.config import NormalizeArgs
from serlens.predict.config import PredictArgs
from serlens.shared.settings import default_workdir
from serlens.shared.sql import SqlLimits
from serlens.shared.workdir import Workdir


@dataclass(frozen=True)
class ApiConfig:
    """Validated settings of the API.

    Attributes:
        workdir: the run folder whose feature store, checkpoints and audio the API uses.
        model: a model folder (or hub id) used when a request names no checkpoint; None: the
            latest fine-tuned checkpoint in the store.
        max_upload_bytes: largest accepted upload, in bytes.
        max_duration_s: longest accepted audio, in seconds.
        sql_max_rows: most rows a ``/sql`` query returns.
        sql_timeout_s: longest a ``/sql`` query runs, in seconds.
        embed_max_batch_size: most ``/embed`` requests gathered into one forward pass.
        embed_batch_wait_timeout_s: longest wait for an ``/embed`` batch to fill, in seconds.
        normalize: loudness normalisation settings (the Normalize deployment, and lineage).
        egemaps: eGeMAPS settings (the Egemaps deployment, and lineage).
        embed: embedding settings (the Embed deployment, and lineage).
        predict: classifier settings (the Predict deployment).
        sql_limits: every limit of a ``/sql`` query (rows, time, memory, threads, spill,
            response bytes, concurrency).
        model_max_duration_s: longest clip ``/embed`` and ``/predict`` accept, in seconds
            (the encoder's memory grows with the square of the length).
    """

    workdir: Path
    model: str | None
    max_upload_bytes: int
    max_duration_s: float
    sql_max_rows: int
    sql_timeout_s: float
    embed_max_batch_size: int
    embed_batch_wait_timeout_s: float
    normalize: NormalizeArgs
    egemaps: EgemapsArgs
    embed: EmbedArgs
    predict: PredictArgs
    sql_limits: SqlLimits
    model_max_duration_s: float

    @property
    def paths(self) -> Workdir:
        """The workdir's layout (store, checkpoints, audio, train requests)."""
        return Workdir(self.workdir)


class ApiArgs(BaseModel):
    """The ``args`` of the Serve application (``serve run serlens.api.app:build_app k=v``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workdir: str | None = None  # None: $SERLENS_WORKDIR, else ./serlens-work
    model: str | None = None  # None: the latest fine-tuned checkpoint in the store
    max_upload_mb: float = Field(25, gt=0)  # largest upload, MiB
    max_duration_s: float = Field(600, gt=0)  # longest audio, seconds
    sql_max_rows: int = Field(10_000, ge=1)
    sql_timeout_s: float = Field(10, gt=0)
    embed_max_batch_size: int = Field(8, ge=1)
    embed_batch_wait_timeout_s: float = Field(0.05, ge=0)
    # eGeMAPS extractor replicas; None: one per CPU of the cluster when the app is built (at most 8).
    egemaps_replicas: int | None = Field(None, ge=1)
    # GPUs per Embed and Predict replica; None: 0.5 if the cluster has a GPU when the app is built.
    model_gpus: float | None = Field(None, ge=0)
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
        """The validated settings as a frozen ``ApiConfig`` (the workdir made absolute)."""
        workdir = Path(self.workdir) if self.workdir else default_workdir()
        return ApiConfig(
            workdir=workdir.expanduser().resolve(),
            model=self.model,
            max_upload_bytes=int(self.max_upload_mb * 1024 * 1024),
            max_duration_s=self.max_duration_s,
            sql_max_rows=self.sql_max_rows,
            sql_timeout_s=self.sql_timeout_s,
            embed_max_batch_size=self.embed_max_batch_size,
            embed_batch_wait_timeout_s=self.embed_batch_wait_timeout_s,
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
        )
