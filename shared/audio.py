"""Decoding, resampling and checks of audio; every service sees 16 kHz mono float32.

Decoding goes through libsndfile (``soundfile``: WAV, FLAC, OGG/Vorbis/Opus, MP3) and
resampling through soxr (VHQ). Checks raise ``InvalidAudioError`` naming the culprit.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from serlens.shared.errors import AudioDecodeError, InvalidAudioError, UnsupportedMediaTypeError

#: The sampling rate of every signal past decoding, in Hz.
TARGET_SAMPLING_RATE = 16_000

#: Shortest clip accepted, in seconds: ITU-R BS.1770 gates loudness in 400 ms blocks.
MIN_DURATION_S = 0.4

#: Containers accepted at the HTTP ingress (libsndfile's format names).
SUPPORTED_FORMATS = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}

#: Below this peak (about -120 dBFS) a signal counts as digital silence.
SILENCE_PEAK = 1e-6


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded signal, already mono and at ``TARGET_SAMPLING_RATE``.

    Attributes:
        signal: float32 samples in [-1, 1], shape ``(num_samples,)``.
        sampling_rate: always ``TARGET_SAMPLING_RATE`` (Hz).
        source_sampling_rate: the rate of the input, in Hz.
        source_num_channels: the channel count of the input.
        source_format: libsndfile's container name (``WAV``, ``FLAC``, ...).
    """

    signal: np.ndarray
    sampling_rate: int
    source_sampling_rate: int
    source_num_channels: int
    source_format: str

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return len(self.signal) / self.sampling_rate


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_mono(signal: np.ndarray) -> np.ndarray:
    """Average the channels of a ``(num_samples, num_channels)`` array."""
    return signal if signal.ndim == 1 else signal.mean(axis=1)


def resample(signal: np.ndarray, sampling_rate: int, target_rate: int = TARGET_SAMPLING_RATE) -> np.ndarray:
    """Resample a mono signal with soxr (very high quality).

    Args:
        signal: mono float samples.
        sampling_rate: rate of ``signal`` in Hz.
        target_rate: wanted rate in Hz.
    """
    if sampling_rate == target_rate:
        return signal.astype(np.float32, copy=False)
    return soxr.resample(signal.astype(np.float32, copy=False), sampling_rate, target_rate, quality="VHQ")


def decode(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> DecodedAudio:
    """Decode a file or bytes to 16 kHz mono float32.

    Args:
        source: a path, or the bytes of an upload.
        name: how to name the input in errors (default: the path).

    Raises:
        AudioDecodeError: empty, truncated or non-audio input.
        UnsupportedMediaTypeError: audio in a container other than WAV, FLAC, OGG, MP3.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    if isinstance(source, bytes):
        if not source:
            raise AudioDecodeError(f"{label}: empty upload (0 bytes)")
        handle: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise AudioDecodeError(f"{label}: empty file (0 bytes)")
        handle = str(path)
    try:
        with sf.SoundFile(handle) as snd:
            fmt = snd.format
            rate = int(snd.samplerate)
            channels = int(snd.channels)
            frames = snd.frames
            data = snd.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioDecodeError(f"{label}: not decodable audio ({err})") from err
    if fmt not in SUPPORTED_FORMATS:
        accepted = sorted(set(SUPPORTED_FORMATS.values()))
        raise UnsupportedMediaTypeError(f"{label}: container {fmt} is not one of {accepted}")
    if frames > 0 and len(data) < frames:
        raise AudioDecodeError(f"{label}: truncated: header says {frames} frames, file holds {len(data)}")
    if fmt in ("WAV", "WAVEX"):
        _check_riff_complete(source if isinstance(source, bytes) else Path(source), label)
    mono = to_mono(data)
    return DecodedAudio(
        signal=resample(mono, rate),
        sampling_rate=TARGET_SAMPLING_RATE,
        source_sampling_rate=rate,
        source_num_channels=channels,
        source_format=fmt,
    )


def _check_riff_complete(source: bytes | Path, label: str) -> None:
    """Raise when a RIFF/WAVE file's data chunk claims more bytes than the file holds.

    libsndfile quietly reads what is there; a truncated upload must be refused instead.
    """
    if isinstance(source, bytes):
        head, total = source[:1 << 16], len(source)
    else:
        total = source.stat().st_size
        with open(source, "rb") as fh:
            head = fh.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= len(head):
        chunk_id, size = head[offset:offset + 4], int.from_bytes(head[offset + 4:offset + 8], "little")
        if chunk_id == b"data":
            if size != 0xFFFFFFFF and offset + 8 + size > total:
                raise AudioDecodeError(
                    f"{label}: truncated WAV: data chunk declares {size} bytes, file holds {total - offset - 8}"
                )
            return
        offset += 8 + size + (size & 1)


def check_signal(
    signal: np.ndarray,
    sampling_rate: int,
    *,
    name: str = "signal",
    min_duration_s: float = MIN_DURATION_S,
    max_duration_s: float | None = None,
    allow_silence: bool = False,
) -> None:
    """Raise ``InvalidAudioError`` unless the signal is usable for analysis.

    Args:
        signal: mono float samples.
        sampling_rate: in Hz.
        name: how to name the signal in the error.
        min_duration_s: shortest accepted duration, in seconds.
        max_duration_s: longest accepted duration, in seconds (None: no limit).
        allow_silence: accept an all-zero (digitally silent) signal.

    Raises:
        InvalidAudioError: NaN or infinite samples, too short, too long, silent.
    """
    if signal.ndim != 1:
        raise InvalidAudioError(f"{name}: expected a mono signal, got shape {signal.shape}")
    if signal.size == 0:
        raise InvalidAudioError(f"{name}: no samples (0 s)")
    if not np.all(np.isfinite(signal)):
        bad = int(np.count_nonzero(~np.isfinite(signal)))
        raise InvalidAudioError(f"{name}: {bad} NaN or infinite sample(s)")
    duration_s = signal.size / sampling_rate
    if duration_s < min_duration_s:
        raise InvalidAudioError(
            f"{name}: {duration_s * 1000:.0f} ms is shorter than the {min_duration_s * 1000:.0f} ms minimum "
            "(one 400 ms loudness gating block)"
        )
    if max_duration_s is not None and duration_s > max_duration_s:
        raise InvalidAudioError(f"{name}: {duration_s:.1f} s is longer than the {max_duration_s:g} s maximum")
    if not allow_silence and float(np.max(np.abs(signal))) < SILENCE_PEAK:
        raise InvalidAudioError(f"{name}: digital silence (peak below -120 dBFS)")


def write_wav(path: str | os.PathLike[str], signal: np.ndarray, sampling_rate: int = TARGET_SAMPLING_RATE,
              *, subtype: str = "FLOAT") -> None:
    """Write a mono signal as WAV atomically (temporary name, then rename).

    Args:
        path: destination.
        signal: mono float samples.
        sampling_rate: in Hz.
        subtype: libsndfile subtype; ``FLOAT`` keeps float32 exactly, ``PCM_16`` as CREMA-D.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), signal, sampling_rate, subtype=subtype, format="WAV")
    os.replace(tmp, final)


def store_normalized(audio_dir: str | os.PathLike[str], audio_sha256: str, signal: np.ndarray) -> tuple[Path, str]:
    """Keep a normalised 16 kHz signal under ``audio_dir``, addressed by its source's hash.

    The same source normalised with the same settings always lands on the same path, so the
    pipeline and the HTTP API share files and a repeated clip is written once.

    Returns:
        ``(path, sha256 of the written file)``.
    """
    path = Path(audio_dir) / audio_sha256[:2] / f"{audio_sha256}.wav"
    if not path.exists():
        write_wav(path, signal, TARGET_SAMPLING_RATE, subtype="FLOAT")
    return path, sha256_file(path)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a WAV that serlens wrote: ``(float32 mono signal, sampling_rate)``."""
    signal, rate = sf.read(str(path), dtype="float32", always_2d=False)
    return to_mono(signal).astype(np.float32, copy=False), int(rate)


def wav_bytes(signal: np.ndarray, sampling_rate: int = TARGET_SAMPLING_RATE, *, subtype: str = "PCM_16") -> bytes:
    """Encode a mono signal as WAV bytes (for HTTP responses and tests)."""
    buffer = io.BytesIO()
    sf.write(buffer, signal, sampling_rate, subtype=subtype, format="WAV")
    return buffer.getvalue()
