"""The trainer's fast paths against plain Hugging Face and against each other, on the tiny WavLM."""

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from support.trainer import LABELS, SMALL, make_clips

from serlens.shared.models import SpeechClassifier, create_random_encoder, load_encoder, prepare_batch
from serlens.trainer.data import ClipDataset, DeviceFeeder, collate
from serlens.trainer.service import accumulate_gradients, freeze_feature_encoder

# Every source of randomness in training mode switched off: dropout, LayerDrop, SpecAugment.
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, mask_feature_prob=0.0)


@pytest.fixture(scope="module")
def quiet_model(tmp_path_factory):
    return str(create_random_encoder(tmp_path_factory.mktemp("quiet") / "m", seed=3, **NO_DROPOUT))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_clips(tmp_path_factory.mktemp("clips"), per_label=2, seed=5)


def _trainer_batches(clips, bundle, micro_batch_size):
    dataset = ClipDataset(clips, LABELS)
    feeder = DeviceFeeder(torch.device("cpu"), normalize=bundle.do_normalize)
    indices = list(range(len(clips)))
    for start in range(0, len(indices), micro_batch_size):
        yield feeder(*collate([dataset[i] for i in indices[start : start + micro_batch_size]],
                              normalize=feeder.host_normalizes))


def test_the_feed_matches_prepare_batch(clips, quiet_model):
    _, bundle = load_encoder(quiet_model)
    values, mask, targets = next(_trainer_batches(clips, bundle, len(clips)))
    signals = [ClipDataset(clips, LABELS)[i][0] for i in range(len(clips))]
    expected_values, expected_mask = prepare_batch(signals, bundle)
    assert torch.equal(values, expected_values)
    assert mask.dtype == torch.bool and torch.equal(mask, expected_mask.bool())
    assert targets.tolist() == [LABELS.index(c.label) for c in clips]


def test_on_a_gpu_the_feed_standardises_there_as_on_the_host(clips, quiet_model):
    """On CUDA the loader leaves standardisation to the device (normalize_on_device): the same values."""
    _, bundle = load_encoder(quiet_model)
    assert bundle.do_normalize
    gpu_like = DeviceFeeder(torch.device("cpu"), normalize=True)
    gpu_like.on_device, gpu_like.host_normalizes = True, False  # as DeviceFeeder sets them on CUDA
    dataset = ClipDataset(clips, LABELS)
    items = [dataset[i] for i in range(len(clips))]
    on_device, mask, _ = gpu_like(*collate(items, normalize=gpu_like.host_normalizes))
    on_host, host_mask, _ = DeviceFeeder(torch.device("cpu"), normalize=True)(*collate(items, normalize=True))
    torch.testing.assert_close(on_device, on_host, rtol=0, atol=2e-6)
    assert torch.equal(mask, host_mask) and torch.all(on_device[~mask] == 0)


def test_freeze_feature_encoder_builds_no_graph_through_the_cnn(quiet_model):
    x = torch.randn(2, 8_000)
    encoder, _ = load_encoder(quiet_model)
    encoder.train()
    for parameter in encoder.feature_extractor.parameters():
        parameter.requires_grad = False
    # requires_grad alone: Hugging Face still marks the CNN's input, so its graph is recorded.
    assert encoder.feature_extractor(x).grad_fn is not None
    freeze_feature_encoder(encoder)
    assert encoder.feature_extractor(x).grad_fn is None
    assert encoder(x).last_hidden_state.grad_fn is not None  # the transformer still trains

    # An encoder without Hugging Face's method: its CNN runs under no_grad instead.
    other, _ = load_encoder(quiet_model)
    other.train()
    bare = types.SimpleNamespace(feature_extractor=other.feature_extractor)
    freeze_feature_encoder(bare)
    assert other.feature_extractor(x).grad_fn is None
    assert not any(p.requires_grad for p in other.feature_extractor.parameters())
    assert list(other.state_dict()) == list(encoder.state_dict())  # names (and save_pretrained) untouched
    torch.testing.assert_close(other.feature_extractor(x), encoder.feature_extractor(x), rtol=0, atol=0)


def _hugging_face_reference(model_path, clips, head):
    """Plain Hugging Face: its feature extractor pads and normalises, WavLMModel encodes."""
    from transformers import AutoFeatureExtractor, WavLMModel

    extractor = AutoFeatureExtractor.from_pretrained(model_path)
    encoder = WavLMModel.from_pretrained(model_path).train()
    encoder.freeze_feature_encoder()
    signals = [ClipDataset(clips, LABELS)[i][0] for i in range(len(clips))]
    inputs = extractor(signals, sampling_rate=16_000, padding=True, return_attention_mask=True,
                       return_tensors="pt")
    hidden = encoder(inputs.input_values, attention_mask=inputs.attention_mask).last_hidden_state
    frames = encoder._get_feature_vector_attention_mask(hidden.shape[1], inputs.attention_mask)
    weights = frames.unsqueeze(-1).to(hidden.dtype)
    logits = head((hidden * weights).sum(1) / weights.sum(1))
    targets = torch.tensor([LABELS.index(c.label) for c in clips])
    F.cross_entropy(logits, targets).backward()
    return logits.detach(), dict(encoder.named_parameters()), head


@pytest.mark.parametrize("fast", [False, True], ids=["hugging-face-forward", "fused-attention"])
def test_training_logits_and_gradients_match_hugging_face(quiet_model, clips, fast):
    encoder, bundle = load_encoder(quiet_model)
    freeze_feature_encoder(encoder)
    torch.manual_seed(0)
    classifier = SpeechClassifier(encoder, bundle, LABELS).train()
    assert classifier.use_fast_forward() if fast else classifier.fast is None  # the trainer's default: fast
    reference_head = torch.nn.Linear(bundle.hidden_size, len(LABELS))
    reference_head.load_state_dict(classifier.head.state_dict())
    expected_logits, expected_params, reference_head = _hugging_face_reference(quiet_model, clips, reference_head)

    values, mask, _ = next(_trainer_batches(clips, bundle, len(clips)))
    torch.testing.assert_close(classifier(values, mask).detach(), expected_logits, rtol=0, atol=1e-5)
    # Gradients of a step split into micro-batches of 2 (accumulated) against one batch of all.
    accumulate_gradients(classifier, _trainer_batches(clips, bundle, 2), clips_in_step=len(clips))
    trained = 0
    for name, parameter in classifier.encoder.named_parameters():
        reference = expected_params[name]
        assert (parameter.grad is None) == (reference.grad is None), name
        if parameter.grad is not None:
            torch.testing.assert_close(parameter.grad, reference.grad, rtol=0, atol=1e-5, msg=name)
            trained += 1
    assert trained > 20 and not any(n.startswith("feature_extractor.") and p.grad is not None
                                    for n, p in classifier.encoder.named_parameters())
    torch.testing.assert_close(classifier.head.weight.grad, reference_head.weight.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(classifier.head.bias.grad, reference_head.bias.grad, rtol=0, atol=1e-5)


def test_the_split_of_the_effective_batch_does_not_change_training(tmp_path, quiet_model):
    from serlens.shared import tracking
    from serlens.trainer.config import TrainArgs
    from serlens.trainer.service import TrainerService

    train = make_clips(tmp_path / "audio", per_label=4, seed=7)
    validation = make_clips(tmp_path / "audio", per_label=1, seed=8)
    tracking_config = tracking.tracking_config(tmp_path, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    weights = {}
    for batch, accum in ((8, 1), (4, 2), (3, 3)):  # 8, 8 and 9 clips per step: the last differs
        settings = {**SMALL, "batch_size": batch, "grad_accum_steps": accum, "max_steps": 3,
                    "eval_every_steps": 3, "checkpoint_every_steps": 3, "log_checkpoints_to_mlflow": False}
        result = TrainerService(config=TrainArgs(**settings).to_config(), tracking=tracking_config).fit(
            model=quiet_model, train=train, validation=validation, labels=LABELS,
            output_dir=tmp_path / f"out-{batch}x{accum}", train_key=f"split-{batch}x{accum}", progress=False)
        weights[batch, accum] = SpeechClassifier.load(result.checkpoints[-1].local_path).state_dict()
    for name, value in weights[8, 1].items():
        torch.testing.assert_close(weights[4, 2][name], value, rtol=1e-4, atol=1e-5, msg=name)
    moved = [n for n, v in weights[8, 1].items() if not torch.allclose(weights[3, 3][n], v, rtol=1e-4, atol=1e-5)]
    assert moved, "another effective batch must give other weights (the check above can fail)"
    assert np.isfinite([v.abs().sum().item() for v in weights[3, 3].values()]).all()


def test_clip_lengths_not_masks_leave_the_host(clips, quiet_model):
    _, bundle = load_encoder(quiet_model)
    dataset = ClipDataset(clips, LABELS)
    values, lengths, targets = collate([dataset[i] for i in range(len(clips))])
    assert values.dtype == torch.float32 and lengths.shape == targets.shape == (len(clips),)
    assert lengths.tolist() == [len(dataset[i][0]) for i in range(len(clips))]
    for row, length in enumerate(lengths.tolist()):
        assert torch.all(values[row, length:] == 0)
