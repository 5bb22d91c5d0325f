"""Uploads are decided on their header before decoding: bombs cost < 2 s and < 300 MB each.

Function level (``serlens.api.uploads.decode_upload``, the very function the ingress calls);
the HTTP-level versions live with the API's integration tests and use the same bombs.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import psutil
import pytest
import soundfile as sf
import soxr

from serlens.api.uploads import check_model_clip, decode_upload
from serlens.shared.audio import AudioLimits, decode
from serlens.shared.errors import (
    AudioDecodeError,
    InvalidAudioError,
    ServiceError,
    UnsupportedMediaTypeError,
)
from serlens.shared.testing import voiced
from tests.support.audio_bombs import upload_bomb_names, upload_bombs

MAX_DURATION_S = 600.0  # the API's default max_duration_s
TIME_BUDGET_S = 2.0
RSS_BUDGET_MB = 300.0


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return upload_bombs(hours=2.0)


def peak_extra_rss_mb(work) -> tuple[float, float, BaseException | None]:
    """Run ``work()``; return (peak RSS above the start in MiB, seconds, what it raised)."""
    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    raised = None
    try:
        work()
    except BaseException as err:  # noqa: BLE001 (the caller asserts on it)
        raised = err
    finally:
        seconds = time.monotonic() - started
        done.set()
        watcher.join()
    return (peak[0] - baseline) / 2**20, seconds, raised


@pytest.mark.parametrize("name", upload_bomb_names())
def test_every_bomb_is_a_named_4xx_within_the_time_and_memory_budget(bombs, name):
    if name not in bombs:
        pytest.skip(f"libsndfile cannot write {name} here")
    data = bombs[name]
    extra_mb, seconds, raised = peak_extra_rss_mb(
        lambda: decode_upload(data, name=name, max_duration_s=MAX_DURATION_S)
    )
    assert isinstance(raised, ServiceError), f"{name}: {raised!r}"
    assert raised.http_status in (413, 415, 422), raised
    assert name in str(raised)
    if name.startswith("container-"):
        # 415 from the header; a container libsndfile cannot parse from bytes is not audio (422).
        assert isinstance(raised, (UnsupportedMediaTypeError, AudioDecodeError)), raised
    elif name == "wav-1hz":
        assert "sampling rate 1 Hz" in str(raised)
    else:
        assert isinstance(raised, InvalidAudioError) and "longer than" in str(raised), raised
    assert seconds < TIME_BUDGET_S, f"{name}: {seconds:.2f} s"
    assert extra_mb < RSS_BUDGET_MB, f"{name}: {extra_mb:.0f} MB"


def test_bombs_are_real_audio_of_the_length_they_claim(bombs):
    # Guard against a bomb that is refused only because it is broken: with the duration
    # limit above its length, the 2-hour Vorbis stream decodes (in blocks) to about 2 hours.
    limits = AudioLimits(max_duration_s=3 * 3600, max_decode_s=600)
    assert decode(bombs["vorbis"], limits=limits).duration_s > 1.5 * 3600
    for name in ("opus", "mp3", "flac-8khz"):
        with sf.SoundFile(io.BytesIO(bombs[name] if name != "mp3" else b"ID3\x03\0\0\0\0\0\x0b"
                                     b"TIT2\0\0\0\x01\0\0\0" + bombs[name])) as snd:
            assert snd.frames / snd.samplerate > 1.5 * 3600, name


def encode(signal: np.ndarray, sampling_rate: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, sampling_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def test_streamed_decoding_equals_decoding_whole():
    stereo = np.stack([voiced(3.0, sampling_rate=44_100, seed=s) for s in (1, 2)], axis=1)
    decoded = decode_upload(encode(stereo, 44_100, "FLAC", "PCM_24"), name="a.flac", max_duration_s=60)
    whole = soxr.resample(sf.read(io.BytesIO(encode(stereo, 44_100, "FLAC", "PCM_24")),
                                  dtype="float32")[0].mean(axis=1), 44_100, 16_000, quality="VHQ")
    assert (decoded.source_sampling_rate, decoded.source_num_channels) == (44_100, 2)
    assert len(decoded.signal) == len(whole) == 48_000
    np.testing.assert_allclose(decoded.signal, whole, atol=1e-4)


def test_the_header_decides_channels_and_rates():
    nine = np.zeros((16_000, 9), np.float32)
    with pytest.raises(InvalidAudioError, match="9 channels"):
        decode_upload(encode(nine, 16_000, "WAV", "PCM_16"), name="nine.wav", max_duration_s=60)
    with pytest.raises(InvalidAudioError, match="sampling rate 4000 Hz"):
        decode_upload(encode(np.zeros(8000, np.float32), 4000, "WAV", "PCM_16"), name="x.wav",
                      max_duration_s=60)


def test_mp3_without_an_id3_tag_decodes():
    data = encode(voiced(2.0, seed=3), 16_000, "MP3", "MPEG_LAYER_III")
    assert data[:3] != b"ID3"
    decoded = decode_upload(data, name="bare.mp3", max_duration_s=60)
    assert decoded.source_format == "MP3" and 1.9 < decoded.duration_s < 2.2


def test_embed_and_predict_take_only_model_length_clips():
    decoded = decode_upload(encode(voiced(3.0), 16_000, "WAV", "PCM_16"), name="c.wav", max_duration_s=60)
    check_model_clip(decoded, name="c.wav", max_duration_s=3.0)
    with pytest.raises(InvalidAudioError, match="model_max_duration_s") as refused:
        check_model_clip(decoded, name="c.wav", max_duration_s=2.0)
    assert refused.value.http_status == 422


def test_refusals_name_the_upload_and_leak_no_address():
    with pytest.raises(AudioDecodeError) as refused:
        decode_upload(b"this is a text file, not audio\n" * 10, name="notes.wav", max_duration_s=60)
    assert str(refused.value).startswith("notes.wav: not decodable audio") and "0x" not in str(refused.value)
