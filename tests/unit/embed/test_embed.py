import numpy as np
import pydantic
import pytest
import torch

from serlens.embed import EmbedArgs, EmbedConfig, EmbedService, core
from serlens.shared.errors import InvalidAudioError, InvalidConfigError
from serlens.shared.models import create_random_encoder, load_encoder

RATE = 16_000
# Lengths in samples: distinct, not multiples of the 320-sample hop, one at the 400-sample minimum.
LENGTHS = (16_000, 9_137, 12_800, 400, 7_001, 15_999, 4_321, 11_111)


def clips(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        t = np.arange(n) / RATE
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t)
        out.append((tone + 0.05 * rng.standard_normal(n)).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def layer_norm_model(tmp_path_factory):
    return str(create_random_encoder(tmp_path_factory.mktemp("enc") / "m"))


@pytest.fixture(scope="module")
def group_norm_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("enc") / "m"
    return str(create_random_encoder(folder, feat_extract_norm="group", do_stable_layer_norm=False))


def service(model, **args):
    return EmbedService(config=EmbedArgs(device="cpu", **args).to_config(), model=model)


def test_shape_identity_and_default_layers(layer_norm_model):
    svc = service(layer_norm_model)
    assert svc.device.type == "cpu"
    assert svc.bundle.num_layers == 4 and svc.bundle.hidden_size == 64
    assert svc.layers == (0, 1, 2, 3, 4)
    out = svc.process_batch(clips(LENGTHS[:3]))
    assert out.shape == (3, 5, 64) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert svc.process_signal(clips()[0], RATE).shape == (5, 64)
    assert svc.process_batch([]).shape == (0, 5, 64)
    # Layers differ from one another and clips from one another: the output is not a constant.
    assert not np.allclose(out[0, 1], out[0, 4]) and not np.allclose(out[0], out[1])


@pytest.mark.parametrize("encoder", ["layer_norm_model", "group_norm_model"])
def test_batched_equals_alone(encoder, request):
    model = request.getfixturevalue(encoder)
    signals = clips()
    # Repeat two lengths so that the group-norm encoder gets batches with more than one clip.
    signals += [clips([9_137], seed=7)[0], clips([400], seed=8)[0]]
    alone = [service(model).process_signal(x, RATE) for x in signals]
    for batch_size in (1, 3, 8):
        batched = service(model, batch_size=batch_size).process_batch(signals)
        for i in range(len(signals)):
            np.testing.assert_allclose(
                batched[i], alone[i], atol=1e-4, rtol=0, err_msg=f"clip {i}, batch {batch_size}"
            )


def test_audio_cap_splits_batches_without_changing_results(layer_norm_model):
    signals = clips()
    reference = service(layer_norm_model, batch_size=8).process_batch(signals)
    capped = service(layer_norm_model, batch_size=8, max_batch_audio_s=1.5).process_batch(signals)
    np.testing.assert_allclose(capped, reference, atol=1e-4, rtol=0)


def test_plan_batches_respects_size_cap_and_mask_support(layer_norm_model, group_norm_model):
    _, layer_bundle = load_encoder(layer_norm_model)
    _, group_bundle = load_encoder(group_norm_model)
    lengths = [16_000, 3_000, 8_000, 8_000, 40_000, 5_000, 8_000, 1_000]
    frames = [core.num_frames(n, (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) for n in lengths]
    plan = core.plan_batches(lengths, layer_bundle, frames=frames, batch_size=3, max_batch_frames=60)
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    assert [4] in plan  # longer than the budget alone: a batch of its own
    for batch in plan:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(frames[i] for i in batch) <= 60
    # No clip cap: the frame budget alone decides, so short clips share a batch.
    budget_only = core.plan_batches(lengths, layer_bundle, frames=frames, max_batch_frames=130)
    # frames: 124 | 49, 24 (2 x 49 = 98) | 24, 24, 15, 9, 2 (5 x 24 = 120 <= 130)
    assert budget_only == [[4], [0, 2], [3, 6, 5, 1, 7]]
    group_plan = core.plan_batches(lengths, group_bundle, frames=frames, batch_size=8, max_batch_frames=10**9)
    assert sorted(i for b in group_plan for i in b) == list(range(len(lengths)))
    assert all(len({lengths[i] for i in b}) == 1 for b in group_plan)
    assert [2, 3, 6] in group_plan


def test_num_frames_matches_the_model(layer_norm_model):
    encoder, _ = load_encoder(layer_norm_model)
    config = encoder.config
    samples = [0, 399, 400, 719, 720, 16_000, 48_000, 123_457]
    expected = encoder._get_feat_extract_output_lengths(torch.tensor(samples)).clamp_min(0).tolist()
    assert [core.num_frames(n, config.conv_kernel, config.conv_stride) for n in samples] == expected


def test_layer_selection(layer_norm_model):
    signals = clips(LENGTHS[:4])
    full = service(layer_norm_model).process_batch(signals)
    np.testing.assert_allclose(
        service(layer_norm_model).process_batch(signals, layers=[4, 0]),
        full[:, [4, 0]],
        atol=1e-5,
        rtol=0,
    )
    configured = service(layer_norm_model, layers=[2])
    assert configured.layers == (2,)
    np.testing.assert_allclose(configured.process_batch(signals), full[:, [2]], atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        configured.process_signal(signals[1], RATE, layers=[np.int64(3)]),
        full[1, [3]],
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([5], "index 5 is out of range; valid: 0..4"),
        ([-1], "index -1 is out of range; valid: 0..4"),
        ([1, 1], "repeated index in [1, 1]"),
        ([], "empty selection"),
        ([1.0], "1.0 is not an integer index"),
    ],
)
def test_bad_layers_name_value_and_range(layer_norm_model, layers, message):
    svc = service(layer_norm_model)
    with pytest.raises(InvalidConfigError) as err:
        svc.process_signal(clips()[0], RATE, layers=layers)
    assert message in str(err.value)


def test_configured_layer_out_of_range_refused_at_construction(layer_norm_model):
    with pytest.raises(InvalidConfigError, match="index 9 is out of range; valid: 0..4"):
        service(layer_norm_model, layers=[9])


@pytest.mark.parametrize(
    ("signal", "rate", "message"),
    [
        (clips()[0], 8000, "sampling rate 8000 Hz, expected 16000 Hz"),
        (np.full(RATE, np.nan, np.float32), RATE, "NaN or infinite"),
        (np.zeros(0, np.float32), RATE, "no samples"),
        (np.zeros((2, RATE), np.float32), RATE, "expected a mono signal, got shape (2, 16000)"),
        (clips([399])[0], RATE, "399 samples, fewer than the 400 the encoder needs"),
        (np.ones(RATE, np.int16), RATE, "expected float samples"),
    ],
    ids=["rate", "nan", "empty", "2d", "short", "int16"],
)
def test_bad_audio_refused(layer_norm_model, signal, rate, message):
    svc = service(layer_norm_model)
    with pytest.raises(InvalidAudioError) as err:
        svc.process_signal(signal, rate, name="clip_3")
    assert str(err.value).startswith("clip_3: ") and message in str(err.value)
    # In a batch every clip is checked first; the culprit is named by position.
    culprit = 0 if rate != RATE else 1
    with pytest.raises(InvalidAudioError, match=rf"^signals\[{culprit}\]: "):
        svc.process_batch([clips()[0], signal], rate)


def test_silence_is_embedded_not_refused(layer_norm_model):
    out = service(layer_norm_model).process_signal(np.zeros(RATE, np.float32), RATE)
    assert out.shape == (5, 64) and np.all(np.isfinite(out))


def test_receptive_field_matches_the_model(layer_norm_model):
    encoder, _ = load_encoder(layer_norm_model)
    need = core.receptive_field_samples(encoder.config.conv_kernel, encoder.config.conv_stride)
    assert need == 400
    frames = encoder._get_feat_extract_output_lengths(torch.tensor([need - 1, need]))
    assert frames.tolist() == [0, 1]


def test_device_and_precision_rules():
    from serlens.shared.models import resolve_device

    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidConfigError, match="'cuda' requested but no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(InvalidConfigError, match="expected 'auto', 'cpu' or 'cuda'"):
        resolve_device("tpu")
    assert core.uses_autocast("bf16", "cuda") and not core.uses_autocast("bf16", "cpu")
    assert not core.uses_autocast("fp32", "cuda")


def test_args_validation_and_config():
    config = EmbedArgs(batch_size=4, layers=[0, 3], precision="bf16").to_config()
    assert config == EmbedConfig(batch_size=4, layers=(0, 3), precision="bf16")
    defaults = EmbedArgs().to_config()
    assert defaults.batch_size is None and defaults.fast and not defaults.compile_layers
    assert EmbedArgs(fast=False, compile_layers=True).to_config() == EmbedConfig(fast=False, compile_layers=True)
    for bad in (
        {"batch_size": 0},
        {"max_batch_audio_s": 0},
        {"layers": []},
        {"layers": [-1]},
        {"layers": [2, 2]},
        {"pooling": "max"},
        {"device": "tpu"},
        {"precision": "fp16"},
        {"batchsize": 4},
        {"fast": "maybe"},
    ):
        with pytest.raises(pydantic.ValidationError):
            EmbedArgs(**bad)
