"""What is checked before a single audio frame is decoded: container, codec, channels, rate, length.

``serlens.shared.audio.decode`` opens every input here; the limits (``AudioLimits``) bound
what an upload or a file may declare, so a hostile header is refused before it costs anything.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from serlens.shared.errors import AudioDecodeError, InvalidAudioError, UnsupportedMediaTypeError

#: Containers accepted at the HTTP ingress (libsndfile's format names).
SUPPORTED_FORMATS = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}

@dataclass(frozen=True)
class AudioLimits:
    """What an input may declare and decode to, checked on the header before any decoding.

    Attributes:
        max_duration_s: longest accepted audio, in seconds; also the hard decode budget
            (``max_duration_s`` times the declared rate, in frames), whatever the header says.
        max_channels: most channels.
        min_sampling_rate: lowest accepted rate, in Hz (a 1 Hz WAV is refused before resampling).
        max_sampling_rate: highest accepted rate, in Hz.
        block_frames: frames decoded (and resampled) at a time.
        max_decode_s: longest decoding may take, in seconds of wall time.
    """

    max_duration_s: float = 3600.0
    max_channels: int = 8
    min_sampling_rate: int = 8_000
    max_sampling_rate: int = 192_000
    block_frames: int = 1 << 16
    max_decode_s: float = 10.0


#: The codecs accepted inside an Ogg container.
OGG_CODECS = frozenset({"VORBIS", "OPUS"})

#: A minimal ID3v2.3 tag (one empty TIT2 frame). libsndfile recognises MP3 bytes without a
#: file name only behind an ID3 tag, so a bare MPEG frame stream gets this one in front.
_EMPTY_ID3 = b"ID3\x03\x00\x00\x00\x00\x00\x0b" + b"TIT2\x00\x00\x00\x01\x00\x00\x00"


def open_audio(source: str | os.PathLike[str] | bytes, label: str) -> sf.SoundFile:
    """Open (parse the header of) a path or upload bytes with libsndfile."""
    if isinstance(source, bytes):
        if not source:
            raise AudioDecodeError(f"{label}: empty upload (0 bytes)")
        if source[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xe3", b"\xff\xfa", b"\xff\xf2", b"\xff\xe2"):
            source = _EMPTY_ID3 + source
        handle: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise AudioDecodeError(f"{label}: empty file (0 bytes)")
        handle = str(path)
    try:
        return sf.SoundFile(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        # libsndfile's own words, without soundfile's "Error opening <object at 0x...>" prefix.
        reason = getattr(err, "error_string", None) or str(err)
        raise AudioDecodeError(f"{label}: not decodable audio ({reason})") from err


def check_header(snd: sf.SoundFile, label: str, limits: AudioLimits) -> int | None:
    """Check container, codec, channels, rate and declared length before any decoding.

    Returns:
        The declared number of frames, or None when the header does not know it.

    Raises:
        UnsupportedMediaTypeError: a container other than WAV, FLAC, OGG (Vorbis, Opus), MP3.
        InvalidAudioError: too many channels, a rate out of range, declared too long.
    """
    accepted = sorted(set(SUPPORTED_FORMATS.values()))
    if snd.format not in SUPPORTED_FORMATS:
        raise UnsupportedMediaTypeError(f"{label}: container {snd.format} is not one of {accepted}")
    if snd.format == "OGG" and snd.subtype not in OGG_CODECS:
        raise UnsupportedMediaTypeError(f"{label}: Ogg codec {snd.subtype} is not one of {sorted(OGG_CODECS)}")
    if not 1 <= snd.channels <= limits.max_channels:
        raise InvalidAudioError(f"{label}: {snd.channels} channels; at most {limits.max_channels} are accepted")
    if not limits.min_sampling_rate <= snd.samplerate <= limits.max_sampling_rate:
        raise InvalidAudioError(f"{label}: sampling rate {snd.samplerate} Hz is outside "
                                f"{limits.min_sampling_rate}-{limits.max_sampling_rate} Hz")
    frames = int(snd.frames)
    if not 0 < frames < 2**62:  # libsndfile's "unknown" is 2**63 - 1
        return None
    if frames / snd.samplerate > limits.max_duration_s:
        raise InvalidAudioError(f"{label}: {frames / snd.samplerate:.1f} s is longer than the "
                                f"{limits.max_duration_s:g} s maximum")
    return frames


def check_riff_complete(source: bytes | Path, label: str) -> None:
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
