"""The JSON bodies of the API's success responses, named in its OpenAPI document.

Each model states what a handler returns today, field by field; handlers keep building plain
dicts, and routes name the model with ``responses.ok(...)``, so a body goes out byte for byte as
before (no response-model filtering or reordering). Bodies that carry store rows get row models
built from the table schemas (``encoding.row_model``): their columns are stated once, there.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from serlens.api.encoding import row_model
from serlens.api.job_registry import JobState
from serlens.api.jobs import METRIC_COLUMNS
from serlens.shared.schema import CHECKPOINTS, LINEAGE_FIELDS, PROMOTIONS, TRAIN_METRICS

_LINEAGE = {f.name for f in LINEAGE_FIELDS}

# Row models are built from the table schemas when this module loads; mypy sees plain models.
if TYPE_CHECKING:
    CheckpointsRow = BaseModel
    MetricPoint = BaseModel
    Promotion = BaseModel
    NewPromotion = BaseModel
else:
    CheckpointsRow = row_model(CHECKPOINTS.name)
    MetricPoint = row_model(TRAIN_METRICS.name, METRIC_COLUMNS, "MetricPoint")
    Promotion = row_model(PROMOTIONS.name, model_name="Promotion")
    NewPromotion = row_model(PROMOTIONS.name, tuple(n for n in PROMOTIONS.schema.names if n not in _LINEAGE),
                             "NewPromotion")


class Body(BaseModel):
    """A response body: exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class Health(Body):
    """The body of ``GET /healthz``."""

    status: Literal["ok"] = Field(description="always `ok`: the ingress answers")


# ------------------------------------------------------------------ audio routes


class UploadSource(Body):
    """What was uploaded, as decoded."""

    clip_id: str = Field(description="SHA-256 of the uploaded bytes (the clip's key in the store)")
    name: str = Field(description="the uploaded file's name (at most 255 characters)")
    format: str = Field(description="the container as libsndfile names it: WAV, FLAC, MP3, OGG")
    sampling_rate: int = Field(description="sampling rate of the upload, in Hz")
    num_channels: int = Field(description="channels of the upload (downmixed to mono)")
    duration_s: float = Field(description="duration of the decoded clip, in seconds")


class StoredRows(Body):
    """Rows that ``store=true`` wrote to one table."""

    table: str = Field(description="the table written: `clips`, `egemaps` or `embeddings`")
    config_hash: str = Field(description="lineage: the config hash of the rows written")
    dataset: str | None = Field(default=None, description="`api` (clips only)")
    clip_id: str | None = Field(default=None, description="the clip's key: SHA-256 of the upload (clips only)")
    rows: int | None = Field(default=None, description="rows written, one per layer (embeddings only)")


class AudioBody(Body):
    """What every audio route's JSON body carries."""

    source: UploadSource = Field(description="what was uploaded")
    stored: list[StoredRows] = Field(description="what was written to the store: empty unless `store=true`")


class Loudness(Body):
    """What loudness normalisation (EBU R128) did to the clip (``LoudnessRecord``)."""

    lufs_before: float | None = Field(description="integrated loudness of the upload, in LUFS (null: silence)")
    lufs_after: float | None = Field(description="integrated loudness after normalisation, in LUFS (null: silence)")
    gain_db: float | None = Field(description="gain applied, in dB")
    peak_dbfs: float | None = Field(description="sample peak after normalisation, in dBFS (null: all zero)")
    clipped_fraction: float = Field(description="share of samples the plain gain would have pushed past full scale")
    policy: str = Field(description="what was done: normalized, limited, clipped, short_tiled or "
                        "silence_passthrough")


class NormalizedAudio(AudioBody):
    """The JSON body of ``POST /normalize?format=json``."""

    sampling_rate: int = Field(description="rate of the normalised audio, in Hz (16000)")
    audio_wav_base64: str = Field(description="the normalised audio: a mono float32 WAV file, base64-encoded")
    loudness: Loudness = Field(description="what the normalisation did")


class EgemapsFeatures(AudioBody):
    """The body of ``POST /egemaps``."""

    features: dict[str, float | None] = Field(
        description="the 88 eGeMAPSv02 functionals by openSMILE's name, in its order (null: not finite)"
    )
    extractor_version: str = Field(description="openSMILE version and feature set that computed them")


class CheckpointUsed(Body):
    """The model that answered (``CheckpointRef``)."""

    train_key: str = Field(description="the fine-tuning run (`external` for the API's configured model)")
    checkpoint_step: int = Field(description="optimizer step of the checkpoint (0 = the pretrained model)")
    local_path: str = Field(description="the folder (or hub id) the model was loaded from")
    model: str = Field(description="the encoder the checkpoint starts from (Hugging Face id or folder)")
    run_id: str | None = Field(description="the MLflow run of the fine-tuning, when known")


class Embeddings(AudioBody):
    """The body of ``POST /embed``."""

    checkpoint: CheckpointUsed = Field(description="the checkpoint that embedded the clip")
    model: str = Field(description="the encoder's identity (`name@revision`, or the name)")
    pooling: Literal["mean"] = Field(description="how frames were pooled into one vector per layer")
    layers: list[int] = Field(description="the hidden states returned, in the order of `embeddings`")
    embeddings: list[list[float]] = Field(description="one pooled vector (hidden size) per entry of `layers`")


class Prediction(AudioBody):
    """The body of ``POST /predict``."""

    checkpoint: CheckpointUsed = Field(description="the checkpoint that classified the clip")
    probabilities: dict[str, float] = Field(description="probability of each emotion label; they sum to 1")
    label: str = Field(description="the most probable label")


# ------------------------------------------------------------------ results and SQL


class ResultTableInfo(Body):
    """One result table the API serves."""

    summary: str = Field(description="what the table holds")
    columns: list[str] = Field(description="its columns, in order (each is also a filter)")
    figure: bool = Field(description="whether `format=png` draws a figure of it")


class ResultTables(RootModel[dict[str, ResultTableInfo]]):
    """The body of ``GET /results``: each result table served, by name."""


class TableRows(Body):
    """Rows of a result table (``GET /results/{name}``); ``GET /schema/{name}`` gives the columns."""

    table: str = Field(description="the table's name")
    rows: list[dict[str, Any]] = Field(description="one object per row, keyed by column (null: no value)")


@cache
def table_rows(name: str) -> Any:
    """The body of a result table's own route (``/cka``, ``/probes``): its typed rows (``CkaRows``, ...)."""
    # Built from the table's name at run time, so typed Any for mypy.
    row: Any = row_model(name)
    table_name: Any = Literal[name]
    return create_model(
        f"{row.__name__}s", __base__=Body, __doc__=f"Rows of the `{name}` table (`GET /{name}`).",
        table=(table_name, Field(description="the table's name")),
        rows=(list[row], Field(description="one object per row, ordered by run, checkpoint and layer")),
    )


class SqlResult(Body):
    """The JSON body of ``POST /sql``."""

    columns: list[str] = Field(description="the result's column names")
    rows: list[list[Any]] = Field(description="one list of values per row, in `columns` order (null: NULL or NaN)")
    row_count: int = Field(description="rows returned")
    truncated: bool = Field(description="whether the result was cut at the API's row limit")


# ------------------------------------------------------------------ training and models


class TrainSubmitted(Body):
    """The body of ``POST /train`` (202)."""

    job_id: str = Field(description="the job: `GET /train/{job_id}`")
    joined: bool = Field(description="true when the caller's identical run was already active (no new run)")
    dataset: str = Field(description="the dataset the run fine-tunes on")
    request_key: str = Field(description="hash of the resolved run config: one active run per key")


class TrainJob(Body):
    """One of the caller's training jobs."""

    job_id: str = Field(description="the job's id")
    state: JobState = Field(description="where the run stands")
    dataset: str = Field(description="the dataset it fine-tunes on")
    start_time: str | None = Field(description="when it was submitted (ISO 8601, UTC)")


class TrainJobList(Body):
    """The body of ``GET /train``."""

    jobs: list[TrainJob] = Field(description="the caller's jobs, oldest first")


class TrainDatasets(Body):
    """The body of ``GET /train/datasets``."""

    datasets: list[str] = Field(description="the dataset names `POST /train` accepts")
    max_train_jobs: int = Field(description="most training jobs active at once (for every caller)")


class TrainJobStatus(TrainJob):
    """The body of ``GET /train/{job_id}``."""

    message: str = Field(description="why it ended, once it has")
    end_time: str | None = Field(description="when it ended (ISO 8601, UTC)")
    entrypoint: str = Field(description="the command the run executes")
    logs_tail: list[str] = Field(description="the last `tail` lines of its output")
    train_key: str | None = Field(description="the fine-tuning run, once known")
    mlflow_run_id: str | None = Field(description="its MLflow run, once known")
    checkpoints: list[CheckpointsRow] = Field(description="the checkpoints it has written, by step")
    metrics: list[MetricPoint] = Field(description="its training curves so far, by step and name")


class ServedModel(Body):
    """The body of ``GET /models``."""

    configured_model: str | None = Field(description="the model the API was started with (it wins), or null")
    promotion: Promotion | None = Field(description="the newest promotion, or null when none was made")


class Promoted(Body):
    """The body of ``POST /models/promote``."""

    promotion: NewPromotion = Field(description="the promotion written")
    configured_model: str | None = Field(
        description="the model the API was started with: while set, it is served instead of the promotion"
    )
