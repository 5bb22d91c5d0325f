"""The FastAPI app of the ingress: routes, upload handling, and the one error mapping.

Built inside the ``Ingress`` replica by ``create_app(state)``; every compute step is an
awaited call on a deployment handle held in ``IngressState``, every store access runs in a
worker thread so the event loop keeps answering (``/healthz`` included).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray.exceptions import RayError, RayTaskError

from serlens.api.config import ApiConfig
from serlens.api.encoding import jsonable, rows_to_csv
from serlens.api.jobs import TrainJobs, TrainRequest, prepare_config
from serlens.api.records import CheckpointIndex, Lineage, StoreWriter, Upload, read_results
from serlens.api.uploads import BodySizeLimit, check_model_clip, decode_upload, read_upload
from serlens.shared.audio import sha256_bytes, wav_bytes
from serlens.shared.errors import InvalidRequestError, NotFoundError, ServiceError
from serlens.shared.schema import CKA, PROBES
from serlens.shared.store import run_readonly_query

#: The multipart field of every audio route.
AudioFile = Annotated[
    UploadFile, File(description="WAV, FLAC, MP3 or OGG; any rate, mono or stereo")
]

#: matplotlib's pyplot is not thread-safe: one figure at a time per replica.
_FIGURE_LOCK = threading.Lock()

API_DESCRIPTION = """
Speech emotion recognition analysis (serlens) over HTTP.

Audio uploads (multipart field `file`): WAV, FLAC, MP3 or OGG, any sampling rate, mono or
stereo. Each upload is decoded once to 16 kHz mono and loudness-normalised (EBU R128)
before anything else; `store=true` writes the clip (dataset `api`, `clip_id` = SHA-256 of
the uploaded bytes) and what was computed to the feature store.

Errors: `{"error": <class>, "detail": <message>}` with 413 (upload too large), 415
(unsupported container), 422 (undecodable or unusable audio), 400 (bad request, rejected
SQL), 404 (no such checkpoint or job), 503 (store or job service unavailable).
"""


@dataclass
class IngressState:
    """What the routes use: settings, deployment handles, the store and its helpers.

    Attributes:
        config: the API's settings.
        normalize: handle of the ``Normalize`` deployment.
        egemaps: handle of the ``Egemaps`` deployment.
        embed: handle of the ``Embed`` deployment.
        predict: handle of the ``Predict`` deployment.
    """

    config: ApiConfig
    normalize: Any
    egemaps: Any
    embed: Any
    predict: Any

    def __post_init__(self) -> None:
        self.store = self.config.paths.store
        self.lineage = Lineage.from_config(self.config)
        self.checkpoints = CheckpointIndex(
            self.store, self.config.paths, default_model=self.config.model
        )
        self.writer = StoreWriter(self.store, self.config, self.lineage)
        self.jobs = TrainJobs(self.config, self.store)
        self._egemaps_info: dict[str, Any] | None = None

    async def egemaps_info(self) -> dict[str, Any]:
        """The extractor's version and feature names (asked once)."""
        if self._egemaps_info is None:
            self._egemaps_info = await self.egemaps.info.remote()
        return self._egemaps_info


class SqlRequest(BaseModel):
    """The body of ``POST /sql``."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="one read-only SELECT over the store's views")
    format: Literal["json", "csv"] = "json"


def error_response(exc: Exception) -> JSONResponse:
    """The JSON error of a ``ServiceError``, also when raised inside a deployment (Ray wraps it)."""
    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    if isinstance(cause, ServiceError):
        return JSONResponse(cause.to_dict(), status_code=cause.http_status)
    # A deployment died or failed for a reason that is not the request's fault.
    status = 500 if isinstance(exc, RayTaskError) else 503
    return JSONResponse(
        {"error": type(cause).__name__, "detail": str(cause).splitlines()[0][:500]},
        status_code=status,
    )


def parse_layers(text: str | None) -> list[int] | None:
    """``"0,3,5"`` -> ``[0, 3, 5]``; None or empty -> None (every layer).

    Raises:
        InvalidRequestError: an item that is not an integer.
    """
    if text is None or not text.strip():
        return None
    try:
        return [int(item) for item in text.split(",")]
    except ValueError as err:
        raise InvalidRequestError(
            f"layers: {text!r} is not a comma-separated list of integers, e.g. 0,3,5"
        ) from err


def latest_run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the most recently written ``train_key`` (a figure shows one run)."""
    if not rows:
        return rows
    newest = max(rows, key=lambda r: r["created_at"])["train_key"]
    return [r for r in rows if r["train_key"] == newest]


def render_png(module: str, function: str, rows: list[dict[str, Any]], **options: Any) -> bytes:
    """Draw stored rows with a figure function ``function(rows, stem, **options)``; the PNG bytes.

    Raises:
        NotFoundError: no rows to draw.
    """
    if not rows:
        raise NotFoundError("no stored results to draw; run `serlens run` first")
    plot = getattr(importlib.import_module(module), function)
    with _FIGURE_LOCK, tempfile.TemporaryDirectory() as tmp:
        stem = Path(tmp) / "figure"
        plot(rows, stem, **options)
        pngs = sorted(Path(tmp).rglob("*.png"))
        if not pngs:
            raise ServiceError(f"{module}.{function} wrote no PNG")
        return pngs[0].read_bytes()


def create_app(state: IngressState) -> FastAPI:
    """The FastAPI app of one ingress replica.

    Args:
        state: settings, handles and store helpers shared by the routes.
    """
    config = state.config
    app = FastAPI(title="serlens", version="1", description=API_DESCRIPTION)
    app.add_middleware(BodySizeLimit, limit_bytes=config.max_upload_bytes)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    app.add_exception_handler(ServiceError, on_error)
    app.add_exception_handler(RayError, on_error)

    async def receive(file: UploadFile, *, for_model: bool = False) -> Upload:
        name = file.filename or "upload"
        data = await read_upload(file, config.max_upload_bytes)
        decoded = await asyncio.to_thread(
            decode_upload, data, name=name, max_duration_s=config.max_duration_s
        )
        if for_model:
            check_model_clip(decoded, name=name, max_duration_s=config.model_max_duration_s)
        normalized, record = await state.normalize.process_signal.remote(
            decoded.signal, decoded.sampling_rate, name
        )
        return Upload(
            name=name,
            audio_sha256=sha256_bytes(data),
            decoded=decoded,
            normalized=normalized,
            loudness=record,
        )

    def source(upload: Upload) -> dict[str, Any]:
        return {
            "clip_id": upload.clip_id,
            "name": upload.name,
            "format": upload.decoded.source_format,
            "sampling_rate": upload.decoded.source_sampling_rate,
            "num_channels": upload.decoded.source_num_channels,
            "duration_s": round(upload.decoded.duration_s, 6),
        }

    @app.get("/healthz", summary="Liveness: the ingress answers and sees the store")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "workdir": str(config.workdir),
            "store": state.store.tables_dir.is_dir(),
        }

    @app.post(
        "/normalize",
        summary="Loudness-normalised 16 kHz audio",
        description="Default: the normalised audio as a 16 kHz float32 WAV (`audio/wav`), "
        "the loudness record in `X-Loudness-*` headers. "
        "`format=json`: `{audio_wav_base64, loudness, source}`.",
    )
    async def normalize(
        file: AudioFile, format: Literal["wav", "json"] = "wav", store: bool = False
    ) -> Response:
        upload = await receive(file)
        stored = [await asyncio.to_thread(state.writer.write_clip, upload)] if store else []
        audio = wav_bytes(upload.normalized, 16_000, subtype="FLOAT")
        loudness = jsonable(upload.loudness.__dict__)
        if format == "json":
            return JSONResponse(
                {
                    "sampling_rate": 16_000,
                    "audio_wav_base64": base64.b64encode(audio).decode(),
                    "loudness": loudness,
                    "source": source(upload),
                    "stored": stored,
                }
            )
        headers = {
            f"X-Loudness-{key.replace('_', '-')}": str(value)
            for key, value in upload.loudness.__dict__.items()
        }
        headers["X-Clip-Id"] = upload.clip_id
        return Response(audio, media_type="audio/wav", headers=headers)

    @app.post("/egemaps", summary="The 88 eGeMAPSv02 functionals of the normalised clip")
    async def egemaps(file: AudioFile, store: bool = False) -> dict[str, Any]:
        upload = await receive(file)
        features = await state.egemaps.process_signal.remote(upload.normalized, 16_000, upload.name)
        info = await state.egemaps_info()
        stored = []
        if store:
            stored.append(await asyncio.to_thread(state.writer.write_clip, upload))
            stored.append(
                await asyncio.to_thread(
                    state.writer.write_egemaps, upload, features, info["extractor_version"]
                )
            )
        return jsonable(
            {
                "features": features,
                "extractor_version": info["extractor_version"],
                "source": source(upload),
                "stored": stored,
            }
        )

    @app.post(
        "/embed",
        summary="Mean-pooled hidden states per layer",
        description="`checkpoint`: a step of the latest fine-tuning run "
        "(default: the configured model, "
        "else the latest run's last step). `layers`: e.g. `0,3,5` (default: every hidden "
        "state; 0 = CNN projection).",
    )
    async def embed(
        file: AudioFile,
        checkpoint: int | None = Query(None, ge=0),
        layers: str | None = None,
        store: bool = False,
    ) -> dict[str, Any]:
        wanted = parse_layers(layers)
        ref = await asyncio.to_thread(state.checkpoints.resolve, checkpoint)
        upload = await receive(file, for_model=True)
        info = await state.embed.info.remote(ref.local_path)
        chosen = wanted if wanted is not None else list(range(info["num_hidden_states"]))
        vectors = await state.embed.embed_signal.remote(
            upload.normalized, 16_000, ref.local_path, chosen
        )
        stored = []
        if store:
            stored.append(await asyncio.to_thread(state.writer.write_clip, upload))
            stored.append(
                await asyncio.to_thread(state.writer.write_embeddings, upload, ref, chosen, vectors)
            )
        return jsonable(
            {
                "checkpoint": ref.to_dict(),
                "model": info["identity"],
                "pooling": "mean",
                "layers": chosen,
                "embeddings": vectors,
                "source": source(upload),
                "stored": stored,
            }
        )

    @app.post("/predict", summary="Emotion probabilities from a fine-tuned checkpoint")
    async def predict(
        file: AudioFile, checkpoint: int | None = Query(None, ge=0), store: bool = False
    ) -> dict[str, Any]:
        ref = await asyncio.to_thread(state.checkpoints.resolve, checkpoint)
        upload = await receive(file, for_model=True)
        probabilities = await state.predict.process_signal.remote(
            upload.normalized, 16_000, ref.local_path, upload.name
        )
        stored = [await asyncio.to_thread(state.writer.write_clip, upload)] if store else []
        return jsonable(
            {
                "checkpoint": ref.to_dict(),
                "probabilities": probabilities,
                "label": max(probabilities, key=probabilities.get),
                "source": source(upload),
                "stored": stored,
            }
        )

    @app.post("/train", status_code=202, summary="Start a fine-tuning run as a Ray job")
    async def train(request: TrainRequest) -> dict[str, Any]:
        path = await asyncio.to_thread(prepare_config, request, config)
        return await asyncio.to_thread(state.jobs.submit, path)

    @app.get(
        "/train/{job_id}", summary="State, log tail, checkpoints and metrics of a fine-tuning job"
    )
    async def train_status(job_id: str, tail: int = Query(50, ge=0, le=10_000)) -> dict[str, Any]:
        return jsonable(await asyncio.to_thread(state.jobs.status, job_id, tail_lines=tail))

    async def results(
        name: str, filters: dict[str, Any], format: str, figure: tuple[str, str], **options: Any
    ) -> Response:
        rows = await asyncio.to_thread(read_results, state.store, name, filters)
        if format == "png":
            png = await asyncio.to_thread(render_png, *figure, latest_run(rows), **options)
            return Response(png, media_type="image/png")
        return JSONResponse(jsonable({"table": name, "rows": rows}))

    @app.get(
        "/cka", summary="Stored CKA of each checkpoint and layer against eGeMAPS (JSON or PNG)"
    )
    async def cka(
        train_key: str | None = None,
        checkpoint_step: int | None = None,
        estimator: str | None = None,
        format: Literal["json", "png"] = "json",
    ) -> Response:
        filters = {
            "train_key": train_key,
            "checkpoint_step": checkpoint_step,
            "estimator": estimator,
        }
        options = {"estimator": estimator} if estimator else {}
        return await results(
            CKA.name, filters, format, ("serlens.cka.figures", "plot_cka_heatmap"), **options
        )

    @app.get("/probes", summary="Stored layer-wise probe results (JSON or PNG)")
    async def probes(
        train_key: str | None = None,
        checkpoint_step: int | None = None,
        features: str | None = None,
        format: Literal["json", "png"] = "json",
    ) -> Response:
        filters = {"train_key": train_key, "checkpoint_step": checkpoint_step, "features": features}
        return await results(
            PROBES.name, filters, format, ("serlens.probe.figures", "plot_probe_f1")
        )

    @app.post(
        "/sql",
        summary="One read-only SELECT over the store's views",
        description="Runs sandboxed (read-only, no files outside the store, no extensions, one "
        "statement); 400 with the reason when refused or past the time limit.",
    )
    async def sql(request: SqlRequest) -> Response:
        columns, rows, truncated = await asyncio.to_thread(
            run_readonly_query,
            state.store,
            request.query,
            limits=config.sql_limits,
        )
        if request.format == "csv":
            return Response(
                rows_to_csv(columns, rows),
                media_type="text/csv",
                headers={"X-Truncated": str(truncated).lower()},
            )
        return JSONResponse(
            {
                "columns": columns,
                "rows": jsonable(rows),
                "row_count": len(rows),
                "truncated": truncated,
            }
        )

    return app
