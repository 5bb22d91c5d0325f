"""Upload bombs: small files that decode to hours of audio, odd rates, every other container.

Shared by the function-level tests (``decode_upload``) and the HTTP-level ones. Each bomb is
real, decodable audio made with soundfile: a short silent clip is encoded, then its audio
frames (MP3) or Ogg pages (Vorbis, Opus; granule positions, sequence numbers and CRCs
rewritten) are repeated until the stream lasts ``hours``, so building one takes a fraction
of a second where encoding hours of audio would take minutes.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

#: Containers the API accepts (libsndfile names); every other writable one is a 415 bomb.
ACCEPTED_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "OGG", "MP3"})


def _encode(seconds: float, sampling_rate: int, channels: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    frames = int(seconds * sampling_rate)
    sf.write(buffer, np.zeros((frames, channels), np.float32), sampling_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, no reflection, no final XOR)."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def _ogg_pages(data: bytes) -> list[bytearray]:
    pages, offset = [], 0
    while offset < len(data):
        if data[offset:offset + 4] != b"OggS":
            raise ValueError(f"no Ogg page at byte {offset}")
        segments = data[offset + 26]
        body = sum(data[offset + 27:offset + 27 + segments])
        end = offset + 27 + segments + body
        pages.append(bytearray(data[offset:end]))
        offset = end
    return pages


def repeat_ogg(data: bytes, copies: int) -> bytes:
    """An Ogg Vorbis/Opus stream whose audio pages are played ``copies`` times in a row.

    The last page (end of stream, its granule trimmed to the exact length) is left out of
    the repeated unit, so every copy holds exactly as many samples as its granules say.
    """
    pages = _ogg_pages(data)
    headers = [p for p in pages if struct.unpack_from("<q", p, 6)[0] == 0]
    unit = pages[len(headers):-1]
    span = struct.unpack_from("<q", unit[-1], 6)[0]
    out = []
    for copy in range(copies):
        for original in unit:
            page = bytearray(original)
            granule = struct.unpack_from("<q", page, 6)[0]
            if granule != -1:
                struct.pack_into("<q", page, 6, granule + copy * span)
            struct.pack_into("<I", page, 18, len(headers) + len(out))
            page[5] &= 0xFF ^ 0x04
            out.append(page)
    out[-1][5] |= 0x04
    for page in out:
        struct.pack_into("<I", page, 22, 0)
        struct.pack_into("<I", page, 22, _ogg_crc(bytes(page)))
    return b"".join(bytes(p) for p in headers + out)


_MP3_BITRATES = {1: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
                 2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]}
_MP3_RATES = {3: [44100, 48000, 32000], 2: [22050, 24000, 16000], 0: [11025, 12000, 8000]}


def _mp3_frames(data: bytes) -> list[bytes]:
    offset = 0
    if data[:3] == b"ID3":
        size = data[6:10]
        offset = 10 + (size[0] << 21 | size[1] << 14 | size[2] << 7 | size[3])
    frames = []
    while offset + 4 <= len(data) and data[offset] == 0xFF and data[offset + 1] & 0xE0 == 0xE0:
        header = int.from_bytes(data[offset:offset + 4], "big")
        version = (header >> 19) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        bitrate = _MP3_BITRATES[1 if version == 3 else 2][(header >> 12) & 15] * 1000
        rate = _MP3_RATES[version][(header >> 10) & 3]
        length = (144 if version == 3 else 72) * bitrate // rate + ((header >> 9) & 1)
        frames.append(data[offset:offset + length])
        offset += length
    return frames


def repeat_mp3(data: bytes, copies: int) -> bytes:
    """An MP3 whose audio frames (its Xing/Info frame dropped) are played ``copies`` times."""
    frames = [f for f in _mp3_frames(data) if b"Xing" not in f[:64] and b"Info" not in f[:64]]
    return b"".join(frames) * copies


def _flac_unknown_length(data: bytes) -> bytes:
    """A FLAC whose STREAMINFO says 'total samples unknown' (the decoder must find out)."""
    patched = bytearray(data)
    # STREAMINFO starts at byte 8; total samples are the low 36 bits of bytes 21..25.
    patched[21] &= 0xF0
    patched[22:26] = b"\0\0\0\0"
    return bytes(patched)


def _other_containers() -> list[str]:
    return sorted(set(sf.available_formats()) - ACCEPTED_FORMATS)


def upload_bomb_names() -> list[str]:
    """The names ``upload_bombs`` may return (for ``pytest.mark.parametrize``; a container
    that libsndfile cannot write here is missing from ``upload_bombs``)."""
    fixed = ["flac-8khz", "vorbis", "opus", "mp3", "wav-1hz", "flac-unknown-length", "flac-8ch-96khz-declared"]
    return fixed + [f"container-{fmt.lower()}" for fmt in _other_containers()]


def upload_bombs(hours: float = 2.0) -> dict[str, bytes]:
    """Every bomb by name (see ``upload_bomb_names``).

    ``hours`` of silence in FLAC (8 kHz), Vorbis, Opus and MP3 (bare MPEG frames, no ID3
    tag); the same FLAC with its length unknown; an 8-bit WAV at 1 Hz (40,000 frames, 39 KiB);
    an 8-channel 96 kHz FLAC whose header declares ``hours``; one small file per other
    container libsndfile can write (AIFF, CAF, W64, MAT5, ...).
    """
    minute = 60.0
    copies = max(1, int(hours * 60))
    bombs = {
        "flac-8khz": _encode(hours * 3600, 8000, 1, "FLAC", "PCM_16"),
        "vorbis": repeat_ogg(_encode(minute, 8000, 1, "OGG", "VORBIS"), copies),
        "opus": repeat_ogg(_encode(minute, 8000, 1, "OGG", "OPUS"), copies),
        "mp3": repeat_mp3(_encode(minute, 8000, 1, "MP3", "MPEG_LAYER_III"), copies),
        "wav-1hz": _encode(40_000, 1, 1, "WAV", "PCM_U8"),
    }
    bombs["flac-unknown-length"] = _flac_unknown_length(bombs["flac-8khz"])
    wide = bytearray(_encode(1.0, 96_000, 8, "FLAC", "PCM_16"))
    declared = int(hours * 3600 * 96_000)
    wide[21] = (wide[21] & 0xF0) | (declared >> 32) & 0x0F
    wide[22:26] = (declared & 0xFFFFFFFF).to_bytes(4, "big")
    bombs["flac-8ch-96khz-declared"] = bytes(wide)
    for fmt in _other_containers():
        try:
            bombs[f"container-{fmt.lower()}"] = _encode(1.0, 16_000, 1, fmt, sf.default_subtype(fmt))
        except (sf.LibsndfileError, ValueError, TypeError, RuntimeError):
            continue  # a container libsndfile reads but cannot write here (SD2, ...)
    return bombs
