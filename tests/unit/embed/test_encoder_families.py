"""Every supported encoder family through the demo path: a tiny random model written with
``save_pretrained``, loaded back, embedded, fine-tuned for a step, its checkpoint embedded again."""

import numpy as np
import pytest
import torch
from support.trainer import LABELS, make_clips

from serlens.embed import EmbedArgs, EmbedService
from serlens.predict import PredictArgs, PredictService
from serlens.shared import tracking
from serlens.shared.errors import InvalidAudioError, UnsupportedModelError
from serlens.shared.hidden_states import encoder_hidden_states
from serlens.shared.models import SUPPORTED_MODEL_TYPES, SpeechClassifier, create_random_encoder, load_encoder
from serlens.shared.whisper import WhisperAudioEncoder
from serlens.trainer.config import TrainArgs
from serlens.trainer.service import TrainerService

RATE = 16_000


def tone(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    return (0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", list(SUPPORTED_MODEL_TYPES))
def test_each_family_embeds_and_fine_tunes(model_type, tmp_path):
    model = str(create_random_encoder(tmp_path / model_type, seed=1, model_type=model_type))
    service = EmbedService(config=EmbedArgs(device="cpu").to_config(), model=model)
    layers = 2 if model_type == "whisper" else 4
    assert service.bundle.model_type == model_type and service.bundle.num_hidden_states == layers + 1
    signals = [tone(n, s) for s, n in enumerate((16_000, 9_137, 7_001))]
    batched = service.process_batch(signals)
    assert batched.shape == (3, service.bundle.num_hidden_states, 64) and np.all(np.isfinite(batched))
    alone = np.stack([service.process_signal(x, RATE) for x in signals])
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-5)  # padding never leaks in
    assert not np.allclose(batched[0], batched[1])

    train = make_clips(tmp_path / "audio", per_label=2, seed=1)
    config = TrainArgs(batch_size=6, grad_accum_steps=1, max_steps=1, eval_every_steps=1, checkpoint_every_steps=1,
                       device="cpu", seed=0, lr=1e-3).to_config()
    result = TrainerService(config=config, tracking=tracking.tracking_config(
        tmp_path, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")).fit(
        model=model, train=train, validation=train[:3], labels=LABELS, output_dir=tmp_path / "ck", train_key=model_type,
        progress=False)
    assert result.steps == 1 and [c.step for c in result.checkpoints] == [0, 1]
    before = SpeechClassifier.load(result.checkpoints[0].local_path).state_dict()
    after = SpeechClassifier.load(result.checkpoints[-1].local_path)
    assert after.bundle.model_type == model_type
    changed = [n for n, p in after.state_dict().items() if not torch.equal(p, before[n])]
    assert any(n.startswith("encoder.") for n in changed) and "head.weight" in changed
    tuned = EmbedService(config=EmbedArgs(device="cpu").to_config(), model=result.checkpoints[-1].local_path)
    assert not np.allclose(tuned.process_batch(signals), batched)
    predicted = PredictService(config=PredictArgs(device="cpu").to_config(),
                               checkpoint=result.checkpoints[-1].local_path).process_signal(signals[0], RATE)
    assert list(predicted) == list(LABELS) and sum(predicted.values()) == pytest.approx(1.0)


def test_whisper_pools_only_the_frames_of_the_clip(tmp_path):
    model, _ = load_encoder(str(create_random_encoder(tmp_path / "w", model_type="whisper")))
    assert isinstance(model, WhisperAudioEncoder) and model.max_samples == 30 * RATE
    # ceil(samples / 160 / 2): a mel frame per 160-sample hop, halved by the second convolution.
    lengths = torch.tensor([1, 320, 321, 16_000, 16_001, 30 * RATE])
    assert model._get_feat_extract_output_lengths(lengths).tolist() == [1, 1, 2, 50, 51, 1500]
    service = EmbedService(config=EmbedArgs(device="cpu").to_config(), model=str(tmp_path / "w"))
    x = tone(16_000, 0)
    with torch.no_grad():
        assert model.log_mel(torch.from_numpy(x)[None]).shape == (1, 80, 3000)  # padded to the 30 s window
        hidden = encoder_hidden_states(model, torch.from_numpy(x)[None])
        last = model(torch.from_numpy(x)[None]).last_hidden_state
    assert len(hidden) == 3 and hidden[2].shape == (1, 1500, 64)
    # Hidden state 2 is layer 2's output before the encoder's final LayerNorm.
    torch.testing.assert_close(model.encoder.layer_norm(hidden[2]), last)
    pooled = service.process_signal(x, RATE)
    for layer in range(3):
        np.testing.assert_allclose(pooled[layer], hidden[layer][0, :50].mean(0).numpy(), rtol=1e-4, atol=1e-5)
    # Averaging the window's padding in (as WhisperForAudioClassification does) gives other numbers.
    assert not np.allclose(pooled[2], hidden[2][0].mean(0).numpy(), atol=1e-2)


def test_whisper_refuses_clips_longer_than_its_window(tmp_path):
    service = EmbedService(config=EmbedArgs(device="cpu").to_config(),
                           model=str(create_random_encoder(tmp_path / "w", model_type="whisper")))
    with pytest.raises(InvalidAudioError, match=r"signals\[1\].*30 s window"):
        service.process_batch([tone(8_000, 0), tone(30 * RATE + 1, 1)])


def test_an_unsupported_model_type_is_named_with_the_supported_ones(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=50)).save_pretrained(tmp_path / "bert")
    with pytest.raises(UnsupportedModelError, match="'bert' model; .*wav2vec2, hubert, wavlm, data2vec-audio, whisper"):
        load_encoder(str(tmp_path / "bert"))
    with pytest.raises(UnsupportedModelError, match="'conformer'"):
        create_random_encoder(tmp_path / "c", model_type="conformer")
