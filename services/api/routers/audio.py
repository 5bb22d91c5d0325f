"""The audio routes: ``/normalize``, ``/egemaps``, ``/embed``, ``/predict`` (``predict`` scope).

Each upload is decoded once here, normalised by the ``Normalize`` deployment, then handed to
the deployment that computes the answer; ``store=true`` writes the clip and the result.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from serlens.api.auth import require
from serlens.api.bodies import EgemapsFeatures, Embeddings, NormalizedAudio, Prediction
from serlens.api.encoding import jsonable
from serlens.api.records import Upload
from serlens.api.responses import COMMON_ERRORS, errors, ok
from serlens.api.uploads import check_model_clip, decode_upload, read_upload
from serlens.shared.audio import sha256_bytes, wav_bytes
from serlens.shared.errors import InvalidRequestError

if TYPE_CHECKING:
    from serlens.api.routes import IngressState

#: The multipart field of every audio route.
AudioFile = Annotated[UploadFile, File(description="WAV, FLAC, MP3 or OGG; any rate, mono or stereo")]

#: How ``POST /normalize`` reads in the API document: a WAV by default, JSON on request.
NORMALIZE_ROUTE: dict[str, Any] = {
    "summary": "Loudness-normalised 16 kHz audio",
    "description": "Default: the normalised audio as a 16 kHz float32 WAV (`audio/wav`), the loudness record "
    "in `X-Loudness-*` headers. `format=json`: the audio base64-encoded with its loudness record and "
    "source (`NormalizedAudio`).",
    "responses": ok(NormalizedAudio, "audio/wav"),
}

#: The rate every deployment works at, in Hz.
SAMPLING_RATE = 16_000


def parse_layers(text: str | None) -> list[int] | None:
    """``"0,3,5"`` -> ``[0, 3, 5]``; None or empty -> None (every layer).

    Raises:
        InvalidRequestError: an item that is not an integer, or more than 1,000 of them.
    """
    if text is None or not text.strip():
        return None
    items = text.split(",")
    if len(items) > 1000:
        raise InvalidRequestError(f"layers: {len(items)} items; at most 1000")
    try:
        return [int(item) for item in items]
    except ValueError as err:
        raise InvalidRequestError(
            f"layers: {text[:100]!r} is not a comma-separated list of integers, e.g. 0,3,5"
        ) from err


def source(upload: Upload) -> dict[str, Any]:
    """What was uploaded: content hash, name, container, rate, channels, duration."""
    return {
        "clip_id": upload.clip_id,
        "name": upload.name,
        "format": upload.decoded.source_format,
        "sampling_rate": upload.decoded.source_sampling_rate,
        "num_channels": upload.decoded.source_num_channels,
        "duration_s": round(upload.decoded.duration_s, 6),
    }


async def receive(state: IngressState, file: UploadFile, *, for_model: bool = False) -> Upload:
    """Read, decode (at the ingress, once) and normalise (``Normalize`` deployment) one upload.

    Args:
        state: the ingress's deployments and settings.
        file: the upload.
        for_model: the clip goes to the encoder (``/embed``, ``/predict``): it must also be no
            longer than ``model_max_duration_s`` (the encoder's memory grows with its square).

    Raises:
        PayloadTooLargeError: the file is over ``max_upload_mb``.
        AudioDecodeError, UnsupportedMediaTypeError, InvalidAudioError: unusable audio.
    """
    config = state.config
    name = (file.filename or "upload")[:255]
    data = await read_upload(file, config.max_upload_bytes)
    decoded = await asyncio.to_thread(decode_upload, data, name=name, max_duration_s=config.max_duration_s)
    if for_model:
        check_model_clip(decoded, name=name, max_duration_s=config.model_max_duration_s)
    normalized, record = await state.normalize.process_signal.remote(decoded.signal, decoded.sampling_rate, name)
    return Upload(name=name, audio_sha256=sha256_bytes(data), decoded=decoded, normalized=normalized,
                  loudness=record)


async def write_clip(state: IngressState, upload: Upload, store: bool) -> list[dict[str, Any]]:
    """Write the clip to the store when ``store`` is set; what was written."""
    return [await asyncio.to_thread(state.writer.write_clip, upload)] if store else []


def audio_router(state: IngressState) -> APIRouter:
    """The audio routes over the deployments and store helpers of ``state``."""
    router = APIRouter(tags=["audio"], dependencies=[Depends(require("predict"))],
                       responses=errors(*COMMON_ERRORS, 400, 415, 422))

    @router.post("/normalize", **NORMALIZE_ROUTE)
    async def normalize(file: AudioFile, format: Literal["wav", "json"] = "wav", store: bool = False) -> Response:
        upload = await receive(state, file)
        stored = await write_clip(state, upload, store)
        audio = wav_bytes(upload.normalized, SAMPLING_RATE, subtype="FLOAT")
        if format == "json":
            return JSONResponse({
                "sampling_rate": SAMPLING_RATE,
                "audio_wav_base64": base64.b64encode(audio).decode(),
                "loudness": jsonable(upload.loudness.__dict__),
                "source": source(upload),
                "stored": stored,
            })
        headers = {f"X-Loudness-{k.replace('_', '-')}": str(v) for k, v in upload.loudness.__dict__.items()}
        headers["X-Clip-Id"] = upload.clip_id
        return Response(audio, media_type="audio/wav", headers=headers)

    @router.post("/egemaps", summary="The 88 eGeMAPSv02 functionals of the normalised clip", response_model=None,
                 responses=ok(EgemapsFeatures))
    async def egemaps(file: AudioFile, store: bool = False) -> dict[str, Any]:
        upload = await receive(state, file)
        features = await state.egemaps.process_signal.remote(upload.normalized, SAMPLING_RATE, upload.name)
        info = await state.egemaps_info()
        stored = await write_clip(state, upload, store)
        if store:
            stored.append(await asyncio.to_thread(
                state.writer.write_egemaps, upload, features, info["extractor_version"]))
        return jsonable({"features": features, "extractor_version": info["extractor_version"],
                         "source": source(upload), "stored": stored})

    @router.post(
        "/embed",
        summary="Mean-pooled hidden states per layer",
        description="`checkpoint`: a step of the promoted fine-tuning run (default: the configured "
        "model, else the promoted checkpoint). `layers`: e.g. `0,3,5` (default: every hidden "
        "state; 0 = CNN projection).",
        response_model=None,
        responses={**ok(Embeddings), **errors(404, 500)},
    )
    async def embed(
        file: AudioFile,
        checkpoint: int | None = Query(None, ge=0, le=10_000_000),
        layers: str | None = Query(None, max_length=4000),
        store: bool = False,
    ) -> dict[str, Any]:
        wanted = parse_layers(layers)
        ref = await asyncio.to_thread(state.checkpoints.resolve, checkpoint)
        upload = await receive(state, file, for_model=True)
        info = await state.embed.info.remote(ref.local_path)
        chosen = wanted if wanted is not None else list(range(info["num_hidden_states"]))
        vectors = await state.embed.embed_signal.remote(upload.normalized, SAMPLING_RATE, ref.local_path, chosen)
        stored = await write_clip(state, upload, store)
        if store:
            stored.append(await asyncio.to_thread(state.writer.write_embeddings, upload, ref, chosen, vectors))
        return jsonable({"checkpoint": ref.to_dict(), "model": info["identity"], "pooling": "mean",
                         "layers": chosen, "embeddings": vectors, "source": source(upload), "stored": stored})

    @router.post("/predict", summary="Emotion probabilities from the promoted (or a given) checkpoint",
                 response_model=None, responses={**ok(Prediction), **errors(404, 500)})
    async def predict(
        file: AudioFile, checkpoint: int | None = Query(None, ge=0, le=10_000_000), store: bool = False
    ) -> dict[str, Any]:
        ref = await asyncio.to_thread(state.checkpoints.resolve, checkpoint)
        upload = await receive(state, file, for_model=True)
        probabilities = await state.predict.process_signal.remote(
            upload.normalized, SAMPLING_RATE, ref.local_path, upload.name
        )
        stored = await write_clip(state, upload, store)
        return jsonable({"checkpoint": ref.to_dict(), "probabilities": probabilities,
                         "label": max(probabilities, key=probabilities.get),
                         "source": source(upload), "stored": stored})

    return router
