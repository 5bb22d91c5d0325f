"""Audio decoding: every documented container to 16 kHz mono, bad input named, one input check."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from serlens.shared.audio import check_input_signal, decode, wav_bytes
from serlens.shared.errors import AudioDecodeError, InvalidAudioError, UnsupportedMediaTypeError
from serlens.shared.testing import voiced


def _encoded(fmt: str, subtype: str | None, rate: int = 8_000, channels: int = 2, seconds: float = 1.0) -> bytes:
    mono = voiced(seconds, sampling_rate=rate)
    signal = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"),
                                               ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III")])
def test_each_documented_container_decodes_to_16k_mono(fmt, subtype):
    rate = 48_000 if subtype == "OPUS" else 8_000
    decoded = decode(_encoded(fmt, subtype, rate=rate), name=f"clip.{fmt.lower()}")
    assert decoded.sampling_rate == 16_000 and decoded.signal.ndim == 1 and decoded.signal.dtype == np.float32
    assert (decoded.source_sampling_rate, decoded.source_num_channels) == (rate, 2)
    assert abs(decoded.duration_s - 1.0) < 0.1  # MP3 and Opus add a little padding


def test_bad_input_is_named():
    wav = wav_bytes(voiced(1.0), 16_000, subtype="PCM_16")
    with pytest.raises(AudioDecodeError, match="clip.wav"):
        decode(wav[: len(wav) // 2], name="clip.wav")
    with pytest.raises(AudioDecodeError, match="notes.txt"):
        decode(b"this is not audio at all" * 20, name="notes.txt")
    with pytest.raises(AudioDecodeError, match="empty.wav"):
        decode(b"", name="empty.wav")
    with pytest.raises(UnsupportedMediaTypeError, match="AIFF"):
        decode(_encoded("AIFF", "PCM_16"), name="clip.aiff")


def test_the_one_input_check():
    ok = check_input_signal(voiced(0.5).astype(np.float64), 16_000, expected_rate=16_000, name="x")
    assert ok.dtype == np.float32
    with pytest.raises(InvalidAudioError, match="x: sampling rate 8000 Hz, expected 16000 Hz"):
        check_input_signal(voiced(0.5), 8_000, expected_rate=16_000, name="x")
    with pytest.raises(InvalidAudioError, match="expected float samples"):
        check_input_signal(np.zeros(8000, dtype=np.int16), 16_000, expected_rate=16_000, name="x")
    with pytest.raises(InvalidAudioError, match="NaN"):
        check_input_signal(np.full(8000, np.nan, dtype=np.float32), 16_000, expected_rate=16_000, name="x")
    with pytest.raises(InvalidAudioError, match="digital silence"):
        check_input_signal(np.zeros(8000, dtype=np.float32), 16_000, expected_rate=16_000, name="x")
    silent = check_input_signal(np.zeros(8000, dtype=np.float32), 16_000, expected_rate=16_000, name="x",
                                allow_silence=True)
    assert silent.size == 8000
