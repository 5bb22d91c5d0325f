import math

import numpy as np
import pydantic
import pyloudnorm
import pytest
import soundfile as sf

from serlens.normalize import NormalizeArgs, NormalizeConfig, NormalizeService
from serlens.normalize.core import normalize_loudness
from serlens.shared.errors import InvalidAudioError, InvalidConfigError
from serlens.shared.testing import voiced


def _lufs(x, rate=16000):
    return pyloudnorm.Meter(rate).integrated_loudness(np.asarray(x, dtype=np.float64))


def _service(**kwargs):
    return NormalizeService(config=NormalizeArgs(**kwargs).to_config())


def test_args_validate_and_convert():
    config = NormalizeArgs().to_config()
    assert config == NormalizeConfig(
        target_lufs=-23.0,
        short_policy="reject",
        silence_policy="reject",
        clipping_policy="limit",
        peak_ceiling_dbfs=-0.1,
    )
    for bad in (
        {"target_lufs": -80},
        {"target_lufs": 1},
        {"peak_ceiling_dbfs": 0.5},
        {"short_policy": "pad"},
        {"clipping": "limit"},
    ):
        with pytest.raises(pydantic.ValidationError):
            NormalizeArgs(**bad)
    with pytest.raises(InvalidConfigError, match="short_policy: 'pad'"):
        NormalizeService(config=NormalizeConfig(short_policy="pad"))


@pytest.mark.parametrize(
    "f0_hz,level,target", [(110, 0.02, -23.0), (210, 0.6, -23.0), (150, 0.1, -30.0)]
)
def test_voiced_signals_reach_the_target(f0_hz, level, target):
    x = level * voiced(1.2, f0_hz=f0_hz, seed=f0_hz) / 0.5
    out, record = _service(target_lufs=target).process_signal(x, 16000)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert abs(_lufs(out) - target) < 0.1
    assert abs(record.lufs_after - target) < 0.1
    assert record.lufs_before == pytest.approx(_lufs(x), abs=1e-6)
    assert record.gain_db == pytest.approx(target - record.lufs_before, abs=1e-9)
    assert record.policy == "normalized" and record.clipped_fraction == 0.0
    assert record.peak_dbfs == pytest.approx(20 * math.log10(np.max(np.abs(out))), abs=1e-6)


def test_short_policy():
    short = voiced(0.2, seed=4)
    with pytest.raises(InvalidAudioError, match="clip7: 200 ms is shorter than one 400 ms"):
        _service().process_signal(short, 16000, name="clip7")
    out, record = _service(short_policy="tile_measure").process_signal(short, 16000)
    assert record.policy == "short_tiled" and out.shape == short.shape
    assert abs(_lufs(np.resize(out, 6400)) - (-23.0)) < 0.1
    assert record.lufs_after == pytest.approx(-23.0, abs=0.1)


def test_silence_policy():
    silence = np.zeros(16000, dtype=np.float32)
    with pytest.raises(InvalidAudioError, match="quiet.wav: silence"):
        _service().process_signal(silence, 16000, name="quiet.wav")
    tiny = (1e-5 * voiced(1.0)).astype(np.float32)  # under the -70 LUFS absolute gate
    for x in (silence, tiny):
        out, record = _service(silence_policy="passthrough").process_signal(x, 16000)
        assert np.array_equal(out, x)
        assert record.policy == "silence_passthrough" and record.gain_db == 0.0
        assert record.lufs_before == -math.inf and record.lufs_after == -math.inf


def _loud_signal():
    # A spiky signal: reaching -6 LUFS needs a gain that pushes its peaks far over full scale.
    x = 0.05 * voiced(1.0, seed=9)
    x[::800] = 0.9
    return x


def test_limit_keeps_peak_under_the_ceiling():
    x = _loud_signal()
    out, record = _service(target_lufs=-6.0, peak_ceiling_dbfs=-1.0).process_signal(x, 16000)
    ceiling = 10 ** (-1.0 / 20)
    assert np.max(np.abs(out)) <= ceiling
    assert np.max(np.abs(out)) == pytest.approx(ceiling, rel=1e-6)
    assert record.policy == "limited"
    assert record.clipped_fraction == pytest.approx(
        np.mean(np.abs(x * 10 ** ((-6 - record.lufs_before) / 20)) > 1)
    )
    assert record.clipped_fraction > 0
    assert record.lufs_after < -6.0 - 1.0 and record.gain_db < -6.0 - record.lufs_before
    assert record.peak_dbfs == pytest.approx(-1.0, abs=1e-5)


def test_limit_applies_when_only_the_ceiling_is_crossed():
    x = voiced(1.0, seed=2)
    _, plain = _service(target_lufs=-20.0).process_signal(x, 16000)
    assert plain.policy == "normalized" and plain.peak_dbfs < -1.0
    ceiling = plain.peak_dbfs - 0.5
    out, record = _service(target_lufs=-20.0, peak_ceiling_dbfs=ceiling).process_signal(x, 16000)
    assert record.policy == "limited" and record.clipped_fraction == 0.0
    assert 20 * math.log10(np.max(np.abs(out))) <= ceiling + 1e-6


def test_clip_hard_clips_and_records_it():
    x = _loud_signal()
    out, record = _service(target_lufs=-6.0, clipping_policy="clip").process_signal(x, 16000)
    assert record.policy == "clipped" and record.clipped_fraction > 0
    assert np.max(np.abs(out)) <= 1.0
    assert np.sum(np.abs(out) == 1.0) == round(record.clipped_fraction * len(x))
    assert record.gain_db == pytest.approx(-6.0 - record.lufs_before)


def test_deterministic():
    x = voiced(1.0, seed=5)
    service = _service()
    first, record = service.process_signal(x, 16000)
    second, again = service.process_signal(x.copy(), 16000)
    assert np.array_equal(first, second) and record == again
    assert np.array_equal(
        first, normalize_loudness(x, 16000, config=NormalizeArgs().to_config())[0]
    )


def test_bad_inputs_name_the_signal():
    service = _service()
    x = voiced(1.0)
    cases = {
        "nan": (np.where(np.arange(len(x)) == 5, np.nan, x), 16000, "NaN"),
        "stereo": (np.stack([x, x], axis=1), 16000, "shape"),
        "ints": ((x * 32767).astype(np.int16), 16000, "dtype"),
        "rate": (x, 44100, "44100 Hz"),
        "empty": (np.zeros(0, dtype=np.float32), 16000, "no samples"),
    }
    for name, (signal, rate, expected) in cases.items():
        with pytest.raises(InvalidAudioError, match=f"{name}: .*{expected}"):
            service.process_signal(signal, rate, name=name)


def test_process_file_decodes_any_rate_and_channels(tmp_path):
    source = voiced(1.0, sampling_rate=44100, seed=3)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([source, 0.3 * source], axis=1), 44100, subtype="PCM_16")
    out, record, decoded = _service().process_file(path)
    assert (decoded.source_sampling_rate, decoded.source_num_channels, decoded.sampling_rate) == (
        44100,
        2,
        16000,
    )
    assert out.dtype == np.float32 and len(out) == len(decoded.signal) == 16000
    assert abs(_lufs(out) - (-23.0)) < 0.1 and record.policy == "normalized"
    with pytest.raises(InvalidAudioError, match=str(tmp_path / "missing.wav")):
        _service().process_file(tmp_path / "missing.wav")
