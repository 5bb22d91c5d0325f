"""FastWavLM against Hugging Face's own WavLM forward, on tiny random models (fp32, CPU)."""

import numpy as np
import pytest
import torch

from serlens.shared.fast_wavlm import FastWavLM
from serlens.shared.models import create_random_encoder, load_encoder

TOLERANCE = 1e-5
# Samples per clip: distinct, not multiples of the 320-sample hop, one at the 400-sample minimum.
LENGTHS = (16_000, 9_137, 400, 12_345)
VARIANTS = {
    # serlens' TINY_WAVLM: WavLM-large's kind (layer-norm CNN, stable layer norm).
    "large-like": {},
    # WavLM-base's kind: group-norm CNN, post-norm layers.
    "base-like": dict(feat_extract_norm="group", do_stable_layer_norm=False),
    # The two switches are independent in WavLMConfig: cover the mixed case too.
    "layer-cnn-post-norm": dict(do_stable_layer_norm=False),
}
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  layerdrop=0.0, mask_time_prob=0.0)


@pytest.fixture(scope="module", params=list(VARIANTS))
def encoder(request, tmp_path_factory):
    folder = create_random_encoder(tmp_path_factory.mktemp("enc") / "m", seed=3, **VARIANTS[request.param])
    model, bundle = load_encoder(str(folder))
    return model, bundle


def batch(lengths=LENGTHS, seed=0):
    generator = torch.Generator().manual_seed(seed)
    values = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        values[i, :n] = torch.randn(n, generator=generator)
    return values, torch.tensor(lengths)


def hf_states(model, values, lengths):
    mask = (torch.arange(values.shape[1])[None] < lengths[:, None]).long() if lengths is not None else None
    with torch.inference_mode():
        out = model(values, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states, out.last_hidden_state


def max_diff(a, b):
    return float((a - b).abs().max())


def test_every_hidden_state_matches_hugging_face(encoder):
    model, bundle = encoder
    fast = FastWavLM(model)
    assert fast.fallback is None
    # Group-norm CNNs are not exact under padding, so serlens feeds them equal lengths, unmasked.
    values, lengths = batch() if bundle.supports_padding_mask else batch((9_137,) * 3)
    mask_lengths = lengths if bundle.supports_padding_mask else None
    reference, reference_last = hf_states(model, values, mask_lengths)
    with torch.inference_mode():
        states = fast.hidden_states(values, mask_lengths)
        last = fast.last_hidden_state(values, mask_lengths)
    assert len(states) == len(reference) == bundle.num_hidden_states
    for index, (ours, theirs) in enumerate(zip(states, reference, strict=True)):
        assert ours.shape == theirs.shape
        assert max_diff(ours, theirs) <= TOLERANCE, f"hidden state {index}"
    assert max_diff(last, reference_last) <= TOLERANCE
    # The check has teeth: consecutive hidden states differ by far more than the tolerance.
    assert max_diff(reference[1], reference[2]) > 1e-2


def test_batched_with_mask_equals_alone(tmp_path):
    folder = create_random_encoder(tmp_path / "m", seed=5)
    model, _ = load_encoder(str(folder))
    fast = FastWavLM(model)
    values, lengths = batch()
    with torch.inference_mode():
        together = fast.hidden_states(values, lengths)
        for i, n in enumerate(LENGTHS):
            alone = fast.hidden_states(values[i : i + 1, :n])
            frames = alone[0].shape[1]
            for index, (a, b) in enumerate(zip(alone, together, strict=True)):
                assert max_diff(a[0], b[i, :frames]) <= TOLERANCE, f"clip {i}, hidden state {index}"


def test_stops_after_the_deepest_layer_asked_for(encoder):
    model, bundle = encoder
    fast = FastWavLM(model)
    values, _ = batch((8_000, 8_000))
    calls = []
    hooks = [layer.feed_forward.register_forward_hook(lambda *_, i=i: calls.append(i))
             for i, layer in enumerate(model.encoder.layers)]
    try:
        with torch.inference_mode():
            picked = fast.hidden_states(values, layers=[2, 0])
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == [0, 1]
    reference, _ = hf_states(model, values, None)
    assert max_diff(picked[0], reference[2]) <= TOLERANCE and max_diff(picked[1], reference[0]) <= TOLERANCE


def test_caches_follow_in_place_weight_updates(encoder):
    model, _ = encoder
    fast = FastWavLM(model)
    values, _ = batch((6_000, 6_000))
    attention = model.encoder.layers[1].attention
    saved = (attention.k_proj.weight.detach().clone(), model.encoder.layers[0].attention.rel_attn_embed.weight
             .detach().clone())
    with torch.inference_mode():
        before = fast.hidden_states(values)[-1]
    try:
        with torch.no_grad():  # what an optimizer step or load_state_dict does: write in place
            attention.k_proj.weight.mul_(3.0)
            model.encoder.layers[0].attention.rel_attn_embed.weight.add_(0.5)
        with torch.inference_mode():
            after = fast.hidden_states(values)[-1]
        reference, _ = hf_states(model, values, None)
        assert max_diff(after, before) > 1e-3
        assert max_diff(after, reference[-1]) <= TOLERANCE
    finally:
        with torch.no_grad():
            attention.k_proj.weight.copy_(saved[0])
            model.encoder.layers[0].attention.rel_attn_embed.weight.copy_(saved[1])


def test_gradients_match_hugging_face_without_dropout(tmp_path):
    folder = create_random_encoder(tmp_path / "m", seed=4, **NO_DROPOUT)
    model, _ = load_encoder(str(folder))
    model.train()
    values, lengths = batch((8_000, 5_555))
    mask = (torch.arange(values.shape[1])[None] < lengths[:, None]).long()
    model(values, attention_mask=mask).last_hidden_state.square().mean().backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    FastWavLM(model).last_hidden_state(values, lengths).square().mean().backward()
    for name, grad in reference.items():
        ours = dict(model.named_parameters())[name].grad
        assert ours is not None and max_diff(ours, grad) <= TOLERANCE, name
    assert reference["encoder.layers.0.attention.rel_attn_embed.weight"].abs().max() > 0


def test_unsupported_config_falls_back_to_hugging_face_exactly(tmp_path):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    hubert = HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(16,) * 7,
                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)).eval()
    adapter = create_random_encoder(tmp_path / "adapter", add_adapter=True, output_hidden_size=64)
    for model in (hubert, load_encoder(str(adapter))[0]):
        fast = FastWavLM(model)
        assert fast.fallback is not None
        values, lengths = batch((8_000, 8_000))
        with torch.inference_mode():
            reference = model(values, output_hidden_states=True)
            states = fast.hidden_states(values, layers=[0, 2])
            last = fast.last_hidden_state(values)
        assert torch.equal(states[0], reference.hidden_states[0])
        assert torch.equal(states[1], reference.hidden_states[2])
        assert torch.equal(last, reference.last_hidden_state)


@pytest.mark.slow
def test_compiled_layers_match_eager(encoder):
    model, bundle = encoder
    values, lengths = batch() if bundle.supports_padding_mask else batch((9_137,) * 3)
    mask_lengths = lengths if bundle.supports_padding_mask else None
    with torch.inference_mode():
        eager = FastWavLM(model).hidden_states(values, mask_lengths)
        compiled = FastWavLM(model, compile_layers=True).hidden_states(values, mask_lengths)
    for index, (a, b) in enumerate(zip(eager, compiled, strict=True)):
        assert max_diff(a, b) <= TOLERANCE, f"hidden state {index}"


@pytest.mark.parametrize("variant", ["large-like", "base-like"])
def test_training_mode_draws_the_same_dropout_layerdrop_and_masks_as_hugging_face(tmp_path, variant):
    # Every random choice but attention dropout (SDPA draws its own mask) is made in the same
    # order on tensors of the same layout, so one seed gives the same forward.
    noisy = dict(hidden_dropout=0.1, activation_dropout=0.1, feat_proj_dropout=0.1, attention_dropout=0.0,
                 layerdrop=0.3, mask_time_prob=0.2, mask_time_length=2, num_hidden_layers=6)
    folder = create_random_encoder(tmp_path / "m", seed=6, **VARIANTS[variant], **noisy)
    model, bundle = load_encoder(str(folder))
    model.train()
    values, lengths = batch((16_000, 9_000)) if bundle.supports_padding_mask else batch((9_000, 9_000))
    mask_lengths = lengths if bundle.supports_padding_mask else None
    mask = None if mask_lengths is None else (torch.arange(values.shape[1])[None] < lengths[:, None]).long()
    outputs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        np.random.seed(seed)  # SpecAugment's spans come from numpy
        reference = model(values, attention_mask=mask).last_hidden_state
        torch.manual_seed(seed)
        np.random.seed(seed)
        ours = FastWavLM(model).last_hidden_state(values, mask_lengths)
        assert max_diff(ours, reference) <= TOLERANCE, f"seed {seed}"
        outputs.append(ours)
    assert max_diff(outputs[0], outputs[1]) > 1e-2  # the noise is really there


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_error_is_no_worse_than_hugging_faces_own(tmp_path):
    folder = create_random_encoder(tmp_path / "m", seed=7)
    model, _ = load_encoder(str(folder), device="cuda")
    values, lengths = batch((48_000, 30_000, 20_800, 48_000))
    values, lengths = values.cuda(), lengths.cuda()
    mask = (torch.arange(values.shape[1], device="cuda")[None] < lengths[:, None]).long()
    saved, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False  # an fp32 reference
    try:
        with torch.inference_mode():
            reference = model(values, attention_mask=mask, output_hidden_states=True).hidden_states
            with torch.autocast("cuda", dtype=torch.bfloat16):
                theirs = model(values, attention_mask=mask, output_hidden_states=True).hidden_states
                ours = FastWavLM(model).hidden_states(values, lengths)
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    frames = model._get_feat_extract_output_lengths(lengths)
    valid = torch.arange(reference[0].shape[1], device="cuda")[None] < frames[:, None]
    for index, (r, t, o) in enumerate(zip(reference, theirs, ours, strict=True)):
        r, t, o = r[valid].float(), t[valid].float(), o[valid].float()
        their_error, our_error = float((t - r).norm() / r.norm()), float((o - r).norm() / r.norm())
        cosine = float(torch.nn.functional.cosine_similarity(o.flatten(), r.flatten(), dim=0))
        assert our_error <= 1.25 * their_error + 1e-6, f"hidden state {index}: {our_error} vs {their_error}"
        assert cosine >= 0.9995, f"hidden state {index}: cosine {cosine}"
