"""Decoding, resampling and checks of audio; every service sees 16 kHz mono float32.

Decoding goes through libsndfile (``soundfile``: WAV, FLAC, OGG/Vorbis/Opus, MP3) and
resampling through soxr (VHQ). What a header declares (container, codec, channels, rate,
length) is checked before any frame is decoded, and decoding runs in blocks under a hard
frame budget (``AudioLimits``). Checks raise ``InvalidAudioError`` naming the culprit.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from serlens.shared.audio_header import SUPPORTED_FORMATS as SUPPORTED_FORMATS
from serlens.shared.audio_header import AudioLimits as AudioLimits
from serlens.shared.audio_header import check_header, check_riff_complete, open_audio
from serlens.shared.errors import AudioDecodeError, InvalidAudioError, PayloadTooLargeError

#: The sampling rate of every signal past decoding, in Hz.
TARGET_SAMPLING_RATE = 16_000

#: Shortest clip accepted, in seconds: ITU-R BS.1770 gates loudness in 400 ms blocks.
MIN_DURATION_S = 0.4

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


def _decode_blocks(snd: sf.SoundFile, label: str, limits: AudioLimits,
                   stop: int | None = None) -> tuple[np.ndarray, int]:
    """Decode block by block to 16 kHz mono, stopping past the duration budget (or after ``stop`` frames).

    Returns:
        ``(signal, frames read)``.
    """
    rate = int(snd.samplerate)
    budget = int(np.ceil(limits.max_duration_s * rate))
    stream = None if rate == TARGET_SAMPLING_RATE else soxr.ResampleStream(
        rate, TARGET_SAMPLING_RATE, 1, dtype="float32", quality="VHQ")
    out: list[np.ndarray] = []
    read = 0
    deadline = time.monotonic() + limits.max_decode_s
    while True:
        if time.monotonic() > deadline:
            raise InvalidAudioError(f"{label}: decoding took longer than {limits.max_decode_s:g} s; refused")
        want = limits.block_frames if stop is None else min(limits.block_frames, stop - read)
        block = (snd.read(frames=want, dtype="float32", always_2d=True) if want > 0
                 else np.zeros((0, snd.channels), dtype=np.float32))
        read += len(block)
        if read > budget:
            raise InvalidAudioError(f"{label}: longer than the {limits.max_duration_s:g} s maximum "
                                    "(stopped decoding there)")
        mono = to_mono(block).astype(np.float32, copy=False)
        out.append(mono if stream is None else stream.resample_chunk(mono, last=len(block) == 0))
        if len(block) == 0:
            break
    return np.concatenate(out), read


def _seek_segment(snd: sf.SoundFile, label: str, frames: int | None,
                  segment: tuple[float | None, float | None]) -> tuple[int | None, str]:
    """Seek to a segment's first frame; returns ``(frames to read, None: to the end; its label)``.

    Raises:
        InvalidAudioError: bounds that are negative, reversed, or past the file's declared end.
    """
    start_s, end_s = segment
    rate = int(snd.samplerate)
    label = f"{label} [{start_s or 0:g}-{'end' if end_s is None else format(end_s, 'g')} s]"
    first = int(round((start_s or 0.0) * rate))
    last = None if end_s is None else int(round(end_s * rate))
    if first < 0 or (last is not None and last <= first):
        raise InvalidAudioError(f"{label}: a segment needs 0 <= start < end")
    if frames is not None and max(last or 0, first) > frames:
        raise InvalidAudioError(f"{label}: the segment ends past the file's end ({frames / rate:.3f} s)")
    if first:
        snd.seek(first)
    return (None if last is None else last - first), label


def decode(
    source: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    limits: AudioLimits | None = None,
    segment: tuple[float | None, float | None] | None = None,
) -> DecodedAudio:
    """Decode a file or bytes to 16 kHz mono float32, deciding on the header first.

    Container, codec, channels, rate and declared length are checked before a single frame
    is decoded; decoding then runs in blocks (each resampled as it comes) and stops at the
    ``limits.max_duration_s`` budget whatever the header claimed, so memory and time stay
    bounded by the limits, never by the input. A segment is read by seeking to its start and
    decoding only its frames, through the same bounded blocks.

    Args:
        source: a path, or the bytes of an upload.
        name: how to name the input in errors (default: the path).
        limits: header and decode limits (default ``AudioLimits()``).
        segment: ``(start_s, end_s)`` in seconds of the source (None: its start, its end).

    Raises:
        AudioDecodeError: empty, truncated or non-audio input.
        UnsupportedMediaTypeError: a container other than WAV, FLAC, OGG (Vorbis, Opus), MP3.
        InvalidAudioError: too many channels, a rate out of range, longer than allowed, or a
            segment outside the file.
    """
    limits = limits or AudioLimits()
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    try:
        with open_audio(source, label) as snd:
            frames = check_header(snd, label, limits)
            fmt, rate, channels = snd.format, int(snd.samplerate), int(snd.channels)
            stop = None
            if segment is not None:
                stop, label = _seek_segment(snd, label, frames, segment)
                frames = stop if stop is not None else (None if frames is None else frames - int(snd.tell()))
            try:
                signal, read = _decode_blocks(snd, label, limits, stop)
            except (sf.LibsndfileError, RuntimeError) as err:
                reason = getattr(err, "error_string", None) or str(err)
                raise AudioDecodeError(f"{label}: not decodable audio ({reason})") from err
    except MemoryError as err:
        raise PayloadTooLargeError(f"{label}: too large to decode within the memory budget") from err
    # MP3 and Ogg headers only estimate their length; WAV and FLAC state it exactly.
    if frames is not None and read < frames and fmt in ("WAV", "WAVEX", "FLAC"):
        raise AudioDecodeError(f"{label}: truncated: header says {frames} frames, file holds {read}")
    if fmt in ("WAV", "WAVEX"):
        check_riff_complete(source if isinstance(source, bytes) else Path(source), label)
    return DecodedAudio(
        signal=signal,
        sampling_rate=TARGET_SAMPLING_RATE,
        source_sampling_rate=rate,
        source_num_channels=channels,
        source_format=fmt,
    )


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


def check_input_signal(signal: np.ndarray, sampling_rate: int, *, expected_rate: int, name: str = "signal",
                       rate_hint: str = "", **limits: Any) -> np.ndarray:
    """The one check of a signal handed to a service: its rate, float samples, then ``check_signal``.

    Args:
        signal: mono float samples.
        sampling_rate: its rate, in Hz.
        expected_rate: the rate the service takes, in Hz.
        name: how to name the signal in errors.
        rate_hint: what to do about another rate (appended to that error).
        limits: ``check_signal``'s keyword arguments (duration bounds, silence).

    Returns:
        The samples as float32 (no copy when they already are).

    Raises:
        InvalidAudioError: another rate, integer samples, or whatever ``check_signal`` refuses.
    """
    if sampling_rate != expected_rate:
        raise InvalidAudioError(f"{name}: sampling rate {sampling_rate} Hz, expected {expected_rate} Hz{rate_hint}")
    array = np.asarray(signal)
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidAudioError(f"{name}: expected float samples in [-1, 1], got dtype {array.dtype}")
    check_signal(array, sampling_rate, name=name, **limits)
    return array.astype(np.float32, copy=False)


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
