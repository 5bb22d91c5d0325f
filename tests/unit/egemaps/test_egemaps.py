import math

import numpy as np
import opensmile
import pandas as pd
import pydantic
import pytest

from serlens.egemaps import EgemapsArgs, EgemapsConfig, EgemapsService, core
from serlens.shared.audio import write_wav
from serlens.shared.errors import InvalidAudioError, InvalidConfigError, ServiceError
from serlens.shared.schema import egemaps_feature_names

RATE = 16_000


def voiced(f0_hz: float = 200.0, duration_s: float = 1.0, seed: int = 0) -> np.ndarray:
    """A vowel-like signal: harmonics of a slowly wobbling F0 under a syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * RATE)) / RATE
    f0 = f0_hz * (1 + 0.02 * np.sin(2 * np.pi * 4 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(np.pi * t / duration_s), 0, None) ** 0.5
    x = 0.2 * envelope * x / np.max(np.abs(x)) + 1e-3 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def service() -> EgemapsService:
    return EgemapsService(config=EgemapsArgs().to_config())


def test_88_features_named_as_opensmile(service):
    assert len(service.feature_names) == 88
    assert service.feature_names == egemaps_feature_names()
    features = service.process_signal(voiced(), RATE)
    assert list(features) == list(service.feature_names)
    assert service.extractor_version == f"opensmile-{opensmile.__version__}/eGeMAPSv02/Functionals"


def test_finite_values_and_f0_of_a_voiced_signal(service):
    features = service.process_signal(voiced(f0_hz=200.0), RATE)
    assert all(math.isfinite(v) for v in features.values())
    # eGeMAPS reports F0 in semitones above 27.5 Hz; the harmonic signal was built at 200 Hz.
    expected = 12 * math.log2(200.0 / 27.5)
    assert features["F0semitoneFrom27.5Hz_sma3nz_amean"] == pytest.approx(expected, abs=1.0)
    low = service.process_signal(voiced(f0_hz=120.0), RATE)
    assert low["F0semitoneFrom27.5Hz_sma3nz_amean"] == pytest.approx(
        12 * math.log2(120 / 27.5), abs=1.0
    )


def test_deterministic_across_calls_and_instances(service):
    x = voiced(seed=3)
    first = service.process_signal(x, RATE)
    assert service.process_signal(x, RATE) == first
    assert EgemapsService(config=EgemapsConfig()).process_signal(x, RATE) == first


def test_batch_equals_one_by_one(service):
    signals = [voiced(180, 0.6, 1), voiced(220, 1.3, 2), voiced(140, 0.9, 3).astype(np.float64)]
    batch = service.process_batch(signals)
    assert batch.shape == (3, 88) and batch.dtype == np.float32
    for row, x in zip(batch, signals, strict=True):
        np.testing.assert_array_equal(
            row, np.array(list(service.process_signal(x, RATE).values()), np.float32)
        )
    assert service.process_batch([]).shape == (0, 88)
    assert not np.allclose(batch[0], batch[1])


def test_process_file_equals_process_signal(service, tmp_path):
    x = voiced(seed=5)
    write_wav(tmp_path / "a.wav", x)
    assert service.process_file(tmp_path / "a.wav") == service.process_signal(x, RATE)


@pytest.mark.parametrize(
    ("signal", "rate", "message"),
    [
        (voiced(), 8000, "sampling rate 8000 Hz, expected 16000 Hz (the normalised signal)"),
        (np.full(RATE, np.nan, np.float32), RATE, "16000 NaN or infinite"),
        (np.zeros(RATE, np.float32), RATE, "digital silence"),
        (voiced(duration_s=0.3), RATE, "300 ms is shorter than the 400 ms minimum"),
        (np.stack([voiced(), voiced()]), RATE, "expected a mono signal, got shape (2, 16000)"),
        (np.zeros(0, np.float32), RATE, "no samples"),
        ((voiced() * 32767).astype(np.int16), RATE, "expected float samples"),
    ],
    ids=["rate", "nan", "silence", "short", "2d", "empty", "int16"],
)
def test_bad_input_refused_with_name_and_expectation(service, signal, rate, message):
    with pytest.raises(InvalidAudioError) as err:
        service.process_signal(signal, rate, name="clip_07")
    assert str(err.value).startswith("clip_07: ")
    assert message in str(err.value)


def test_batch_names_the_bad_clip_before_processing_any(service):
    with pytest.raises(InvalidAudioError, match=r"^signals\[1\]: .*NaN"):
        service.process_batch([voiced(), np.full(RATE, np.nan, np.float32)])


def test_args_validation_and_config():
    config = EgemapsArgs(num_workers=2).to_config()
    assert config == EgemapsConfig(feature_set="eGeMAPSv02", num_workers=2)
    with pytest.raises(pydantic.ValidationError, match="extra"):
        EgemapsArgs(workers=2)
    with pytest.raises(pydantic.ValidationError):
        EgemapsArgs(num_workers=0)
    with pytest.raises(pydantic.ValidationError):
        EgemapsArgs(feature_set="ComParE_2016")
    with pytest.raises(InvalidConfigError, match="'GeMAPS_v9'"):
        EgemapsService(config=EgemapsConfig(feature_set="GeMAPS_v9"))


def test_core_checks_names_and_shapes():
    names = egemaps_feature_names()
    assert core.check_feature_names(list(names), names) == names
    with pytest.raises(ServiceError, match="missing"):
        core.check_feature_names(names[:87], names)
    swapped = (names[1], names[0], *names[2:])
    with pytest.raises(ServiceError, match=f"position 0 is {names[1]!r}"):
        core.check_feature_names(swapped, names)
    frame = pd.DataFrame([np.arange(88, dtype=np.float64)[::-1]], columns=list(reversed(names)))
    vector = core.functionals_to_vector(frame, names)
    assert vector.dtype == np.float32
    np.testing.assert_array_equal(vector, np.arange(88, dtype=np.float32))
    with pytest.raises(ServiceError, match="2 rows"):
        core.functionals_to_vector(pd.concat([frame, frame]), names)
    assert core.extractor_version("2.6.0", "eGeMAPSv02") == "opensmile-2.6.0/eGeMAPSv02/Functionals"


def test_the_stored_names_are_opensmiles_and_the_schema_needs_no_extractor():
    import subprocess
    import sys

    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    assert tuple(smile.feature_names) == egemaps_feature_names()
    code = "import sys, serlens.shared.schema as s; s.egemaps_spec(); print('opensmile' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
