import numpy as np
import pyloudnorm

from serlens.shared.audio import check_signal
from serlens.shared.testing import sine, voiced, write_manifest


def test_sine_has_length_frequency_and_amplitude():
    x = sine(440.0, 0.5, sampling_rate=8000, amplitude=0.25)
    assert x.dtype == np.float32 and x.shape == (4000,)
    assert abs(np.max(np.abs(x)) - 0.25) < 1e-3
    assert np.argmax(np.abs(np.fft.rfft(x))) * 8000 / 4000 == 440.0


def test_voiced_is_deterministic_speech_like_and_exact_length():
    x = voiced(1.3, f0_hz=120, seed=1)
    assert x.dtype == np.float32 and x.shape == (int(1.3 * 16000),)
    assert np.array_equal(x, voiced(1.3, f0_hz=120, seed=1))
    assert not np.array_equal(x, voiced(1.3, f0_hz=120, seed=2))
    check_signal(x, 16000)
    assert -40 < pyloudnorm.Meter(16000).integrated_loudness(x.astype(np.float64)) < -10
    spectrum = np.abs(np.fft.rfft(x))
    assert 60 < np.argmax(spectrum[:8000]) / 1.3 < 1500  # energy at voice frequencies
    assert len(voiced(2.5, sampling_rate=44100)) == int(2.5 * 44100)


def test_write_manifest_fills_missing_cells(tmp_path):
    path = write_manifest(
        tmp_path, [{"path": "a.wav", "label": "x"}, {"path": "b.wav", "gender": None}]
    )
    assert path.read_text().splitlines() == ["path,label,gender", "a.wav,x,", "b.wav,,"]
