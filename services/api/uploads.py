"""Uploads at the ingress: size limits, one decode to 16 kHz mono float32, and the checks.

Audio is decoded here once (``serlens.shared.audio.decode``); only the 16 kHz array travels on to
the deployments. The size limit holds twice: on the declared ``Content-Length`` before
anything is parsed, and on the bytes actually read (also for chunked bodies, which have no
``Content-Length``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serlens.shared.audio import AudioLimits, DecodedAudio, check_signal, decode
from serlens.shared.errors import InvalidAudioError, PayloadTooLargeError

#: Room for the multipart boundaries and part headers around the file, in bytes.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def too_large(what: str, limit_bytes: int, size_bytes: int | None = None) -> PayloadTooLargeError:
    """The 413 error: what was too large, its size when known, and the limit (MiB)."""
    size = f" ({size_bytes / 2**20:.1f} MiB)" if size_bytes is not None else ""
    return PayloadTooLargeError(
        f"{what}{size} is over the {limit_bytes / 2**20:g} MiB limit (max_upload_mb)"
    )


class BodySizeLimit:
    """ASGI middleware: answer 413 to a body over ``limit_bytes`` (plus multipart overhead).

    Args:
        app: the wrapped ASGI app.
        limit_bytes: the largest accepted upload, in bytes.
    """

    def __init__(self, app: ASGIApp, *, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.body_limit = limit_bytes + MULTIPART_OVERHEAD_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 413 before the app reads the body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.body_limit:
                await self._refuse(send, int(declared))
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit, then replay what was read.
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.body_limit:
                await self._refuse(send, total)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size_bytes: int) -> None:
        error = too_large("request body", self.limit_bytes, size_bytes)
        body = json.dumps(error.to_dict()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.http_status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def read_upload(upload: Any, limit_bytes: int) -> bytes:
    """Read an uploaded file (a Starlette ``UploadFile``): at most ``limit_bytes``, +1 to see more.

    Raises:
        PayloadTooLargeError: the file holds more than ``limit_bytes``.
    """
    data = await upload.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise too_large(f"upload {upload.filename!r}", limit_bytes)
    return data


def decode_upload(data: bytes, *, name: str, max_duration_s: float) -> DecodedAudio:
    """Decode an upload to 16 kHz mono float32 and check it is usable audio.

    The header is checked first (container, codec, at most 8 channels, 8-192 kHz, declared
    length): nothing is decoded for a file that declares too much. Decoding then runs in
    blocks under a hard budget of ``max_duration_s`` (and 10 s of wall time), whatever the
    header said. Silence passes here (the loudness normalisation has a policy for it); the
    services that cannot use silence refuse it themselves.

    Args:
        data: the uploaded bytes: WAV, FLAC, OGG (Vorbis or Opus) or MP3; 8-192 kHz; 1-8 channels.
        name: the upload's file name, used in errors.
        max_duration_s: longest accepted audio, in seconds.

    Raises:
        AudioDecodeError: empty, truncated or not audio (422).
        UnsupportedMediaTypeError: audio in another container or codec (415).
        InvalidAudioError: too many channels, a rate out of range, 0 s, under the 400 ms
            minimum, NaN/inf, over ``max_duration_s`` (422).
        PayloadTooLargeError: the decoded audio does not fit in memory (413).
    """
    decoded = decode(data, name=name, limits=AudioLimits(max_duration_s=max_duration_s))
    check_signal(
        decoded.signal,
        decoded.sampling_rate,
        name=name,
        max_duration_s=max_duration_s,
        allow_silence=True,
    )
    return decoded


def check_model_clip(decoded: DecodedAudio, *, name: str, max_duration_s: float) -> None:
    """Refuse a clip too long for the speech encoder (``/embed``, ``/predict``).

    The encoder's attention needs memory that grows with the square of the clip length, so
    these endpoints take at most ``model_max_duration_s`` (ApiArgs), far less than the
    other endpoints' ``max_duration_s``.

    Raises:
        InvalidAudioError: the clip is longer than ``max_duration_s`` (422).
    """
    if decoded.duration_s > max_duration_s:
        raise InvalidAudioError(
            f"{name}: {decoded.duration_s:.1f} s is longer than the {max_duration_s:g} s that "
            "/embed and /predict accept (model_max_duration_s); cut it into shorter clips"
        )
