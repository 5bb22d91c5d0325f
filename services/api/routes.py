"""The FastAPI app of the ingress: its state, the routers, authentication and the one error mapping.

Built inside the ``Ingress`` replica by ``create_app(state)``; every compute step is an
awaited call on a deployment handle held in ``IngressState``, every store access runs in a
worker thread so the event loop keeps answering (``/healthz`` included).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayError, RayTaskError
from starlette.exceptions import HTTPException

from serlens.api.auth import TokenAuth
from serlens.api.bodies import Health
from serlens.api.config import ApiConfig
from serlens.api.jobs import TrainJobs
from serlens.api.records import CheckpointIndex, Lineage, StoreWriter
from serlens.api.responses import describe_uploads, errors, ok
from serlens.api.routers.audio import audio_router
from serlens.api.routers.results import results_router
from serlens.api.routers.sql import sql_router
from serlens.api.routers.training import training_router
from serlens.api.tokens import TokenRegistry
from serlens.api.uploads import BodySizeLimit
from serlens.shared.errors import ServiceError

API_DESCRIPTION = """
Speech emotion recognition analysis (serlens) over HTTP.

Every endpoint but `/healthz` needs `Authorization: Bearer <token>`; a token carries scopes:
`read` (results, SQL, these docs), `predict` (the audio routes), `train` (training jobs,
model promotion).

Audio uploads (multipart field `file`): WAV, FLAC, MP3 or OGG, any sampling rate, mono or
stereo. Each upload is decoded once to 16 kHz mono and loudness-normalised (EBU R128)
before anything else; `store=true` writes the clip (dataset `api`, `clip_id` = SHA-256 of
the uploaded bytes) and what was computed to the feature store.

Errors: `{"error": <class>, "detail": <message>}` (schema `ErrorBody`; a 422 also lists
`problems`, one `{item, reason}` per invalid field) with 401 (no valid token), 403 (token
without the scope), 413 (upload too large), 415 (unsupported container), 422 (invalid
request or unusable audio), 400 (unparsable body, bad parameter, rejected SQL), 404 (no
such checkpoint, table or job), 409 (the same run is training for someone else), 429 (too
many training jobs), 503 (store or job service unavailable). Each route lists its own.
"""


@dataclass
class IngressState:
    """What the routers use: settings, deployment handles, the store and its helpers.

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
        self.checkpoints = CheckpointIndex(self.store, self.config.paths, default_model=self.config.model)
        self.writer = StoreWriter(self.store, self.config, self.lineage)
        self.jobs = TrainJobs(self.config, self.store)
        self.tokens = TokenRegistry(self.config.tokens_file)
        self._egemaps_info: dict[str, Any] | None = None

    async def egemaps_info(self) -> dict[str, Any]:
        """The extractor's version and feature names (asked once)."""
        if self._egemaps_info is None:
            self._egemaps_info = await self.egemaps.info.remote()
        return self._egemaps_info


def error_response(exc: Exception) -> JSONResponse:
    """The JSON error of a ``ServiceError``, also when raised inside a deployment (Ray wraps it)."""
    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    if isinstance(cause, ServiceError):
        return JSONResponse(cause.to_dict(), status_code=cause.http_status)
    # A deployment died or failed for a reason that is not the request's fault.
    status = 500 if isinstance(exc, RayTaskError) else 503
    return JSONResponse(
        {"error": type(cause).__name__, "detail": str(cause).splitlines()[0][:500]}, status_code=status
    )


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """422 in the API's error shape, one problem per invalid field (values are not echoed)."""
    problems = [
        {"item": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")} for e in exc.errors()
    ]
    detail = "; ".join(f"{p['item']}: {p['reason']}" for p in problems)[:1000]
    return JSONResponse({"error": "RequestValidationError", "detail": detail, "problems": problems},
                        status_code=422)


def http_error_response(exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (no such path, method not allowed) in the API's error shape."""
    name = HTTPStatus(exc.status_code).phrase.title().replace(" ", "").replace("-", "")
    return JSONResponse({"error": f"{name}Error", "detail": str(exc.detail)}, status_code=exc.status_code,
                        headers=exc.headers)


def create_app(state: IngressState) -> FastAPI:
    """The FastAPI app of one ingress replica.

    Args:
        state: settings, handles and store helpers shared by the routers.
    """
    app = FastAPI(title="serlens", version="2", description=API_DESCRIPTION)
    # Added last, runs first: no body is read for a caller without a valid token.
    app.add_middleware(BodySizeLimit, limit_bytes=state.config.max_upload_bytes)
    app.add_middleware(TokenAuth, registry=state.tokens)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        return validation_response(exc)  # type: ignore[arg-type]

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        return http_error_response(exc)  # type: ignore[arg-type]

    app.add_exception_handler(ServiceError, on_error)
    app.add_exception_handler(RayError, on_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(HTTPException, on_http_error)

    @app.get("/healthz", summary="Liveness: the ingress answers (no token needed)", response_model=None,
             responses={**ok(Health), **errors(413)})
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(audio_router(state))
    app.include_router(results_router(state.store))
    app.include_router(sql_router(state.config))
    app.include_router(training_router(state))
    document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_uploads(document())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
