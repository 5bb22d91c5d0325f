"""What the API answers, for its OpenAPI document: the error body and each route's status codes.

Every error the API sends is an ``ErrorBody`` (``ServiceError.to_dict``, the 422 of request
validation, the 401 of ``TokenAuth``, the 413 of ``BodySizeLimit``, Starlette's own 404/405):
routes declare which statuses they can answer with ``errors(...)``, so the document lists
each with this model, never FastAPI's default ``HTTPValidationError``. Success bodies are
the models of ``serlens.api.bodies``, each named with ``ok(...)``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """One invalid item of a request or input."""

    model_config = ConfigDict(extra="forbid")

    item: str = Field(description="what is at fault: a field path (`body.train.lr`), a row, a file")
    reason: str = Field(description="what was expected")


class ErrorBody(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="the error's class, e.g. `InvalidAudioError`, `RequestValidationError`")
    detail: str = Field(description="what went wrong, naming the culprit and what was expected")
    problems: list[Problem] = Field(
        default=[], description="every invalid item (422 of request validation and of invalid input only)"
    )


#: What each error status means, for the document (the body is always ``ErrorBody``).
ERROR_MEANINGS: dict[int, str] = {
    400: "Bad request: a body that cannot be parsed (malformed JSON or multipart), a parameter that does "
    "not validate (named), or SQL refused or stopped",
    401: "No valid API token (`Authorization: Bearer <token>`)",
    403: "The token lacks the scope this endpoint needs",
    404: "No such checkpoint, table, run or job",
    409: "The same fine-tuning run is training for another caller",
    413: "Request body or upload over `max_upload_mb`",
    415: "An upload in a container or codec the API does not accept",
    422: "A request that does not validate (every problem listed), or unusable audio",
    429: "Too many training jobs at once; retry when one has finished",
    500: "The model cannot be loaded, or a deployment failed",
    503: "The store, the job service or the model is unavailable (or out of memory); retry later",
}

#: What every authenticated route can answer (the token, its scope, the body limit, the store).
COMMON_ERRORS = (401, 403, 413, 503)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entries of these error statuses, each with ``ErrorBody``.

    Raises:
        KeyError: a status without a meaning in ``ERROR_MEANINGS``.
    """
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}


def content(*media_types: str) -> dict[str, Any]:
    """A success response's ``content`` entry for binary or text media types (JSON is ``ok``'s)."""
    body: dict[str, Any] = {}
    for media_type in media_types:
        if media_type.startswith("text/"):
            body[media_type] = {"schema": {"type": "string"}}
        else:
            body[media_type] = {"schema": {"type": "string", "contentMediaType": media_type}}
    return {"content": body}


def ok(model: Any, *media_types: str, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entry of a success: a JSON body named by ``model``, and other media types.

    A handler that returns a dict also gets ``response_model=None``: its dict goes out as it is
    (FastAPI neither filters nor reorders it), and the document names the model
    (``serlens.api.bodies``) instead of a bare object.
    """
    return {status: {"model": model, **content(*media_types)}}


#: The multipart part every audio route reads, and the containers it accepts.
UPLOAD_FIELD = "file"
UPLOAD_MEDIA_TYPES = "audio/wav, audio/flac, audio/mpeg, audio/ogg, application/octet-stream"


def describe_uploads(document: dict[str, Any]) -> dict[str, Any]:
    """One ``AudioUpload`` schema for the audio routes' multipart bodies, with the part's encoding.

    FastAPI names a body model per route (``Body_predict_predict_post``, ...) and marks the file
    only with OpenAPI 3.1's ``contentMediaType``; generated clients also look for
    ``format: binary`` and the part's ``encoding``.
    """
    schemas = document.get("components", {}).get("schemas", {})
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if form is None or "$ref" not in form["schema"]:
                continue
            name = form["schema"]["$ref"].rsplit("/", 1)[-1]
            body = schemas.pop(name, None) or schemas["AudioUpload"]
            body["title"] = "AudioUpload"
            body["properties"][UPLOAD_FIELD]["format"] = "binary"
            schemas["AudioUpload"] = body
            form["schema"] = {"$ref": "#/components/schemas/AudioUpload"}
            form["encoding"] = {UPLOAD_FIELD: {"contentType": UPLOAD_MEDIA_TYPES}}
    return document
