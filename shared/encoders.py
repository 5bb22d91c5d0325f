"""The speech encoders serlens runs (``SUPPORTED_MODEL_TYPES``) and tiny random ones of each.

The tiny ones are real ``transformers`` models with random weights, written with
``save_pretrained`` so that tests and the demo load them through ``load_encoder``, the path real
weights take.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from serlens.shared.errors import UnsupportedModelError

#: Shapes of the tiny random WavLM of the demo and the tests (real code path, fake weights).
TINY_WAVLM = dict(
    hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128,
    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=False,
    num_buckets=32, max_bucket_distance=200,
)

#: The encoders serlens runs: ``model_type`` -> the transformers classes of a tiny random one
#: (config, model). Whisper is adapted by ``serlens.shared.whisper`` (log-mel input, 30 s window).
SUPPORTED_MODEL_TYPES: dict[str, tuple[str, str]] = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
    "whisper": ("WhisperConfig", "WhisperModel"),
}

#: Tiny shapes of the other raw-waveform encoders (WavLM's without its relative-position buckets;
#: data2vec-audio's positional convolution is a stack of layers, kept at its default depth).
_TINY_BY_TYPE: dict[str, dict[str, Any]] = {
    "wavlm": TINY_WAVLM,
    "wav2vec2": {k: v for k, v in TINY_WAVLM.items() if k not in ("num_buckets", "max_bucket_distance")},
    "hubert": {k: v for k, v in TINY_WAVLM.items() if k not in ("num_buckets", "max_bucket_distance")},
    "data2vec-audio": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128,
                           conv_dim=(32,) * 7, num_conv_pos_embeddings=2, conv_pos_kernel_size=5,
                           num_conv_pos_embedding_groups=4, conv_bias=False),
}


def check_model_type(model_type: str, name_or_path: str) -> None:
    """Raise unless serlens can run ``model_type`` as a speech encoder.

    Raises:
        UnsupportedModelError: naming the model, its type and the supported types.
    """
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(f"{name_or_path!r} is a {model_type!r} model; serlens runs speech encoders of "
                                    f"type {', '.join(SUPPORTED_MODEL_TYPES)}")


def create_random_encoder(path: str | os.PathLike[str], *, seed: int = 0, model_type: str = "wavlm",
                          **overrides: Any) -> Path:
    """Write a randomly initialised tiny encoder (weights + feature extractor) with ``save_pretrained``.

    Args:
        path: folder to write.
        seed: torch seed for the initialisation (same seed, same weights).
        model_type: one of ``SUPPORTED_MODEL_TYPES`` (default: WavLM, as the paper).
        overrides: config fields replacing the tiny shapes (``TINY_WAVLM`` for WavLM).

    Raises:
        UnsupportedModelError: an unknown ``model_type``.
    """
    import transformers

    check_model_type(model_type, f"a random {model_type}")
    if model_type == "whisper":
        from serlens.shared.whisper import create_random_whisper

        return create_random_whisper(path, seed=seed, **overrides)
    config_class, model_class = (getattr(transformers, n) for n in SUPPORTED_MODEL_TYPES[model_type])
    folder = Path(path)
    torch.manual_seed(seed)
    config = config_class(**{**_TINY_BY_TYPE[model_type], **overrides})
    config.serlens_random_init = True
    model_class(config).save_pretrained(folder)
    save_feature_extractor(folder, sampling_rate=16_000, do_normalize=True,
                           attention_mask=getattr(config, "feat_extract_norm", "layer") == "layer")
    return folder


def save_feature_extractor(folder: str | os.PathLike[str], *, sampling_rate: int, do_normalize: bool,
                           attention_mask: bool) -> None:
    """Write a raw-waveform feature extractor's config (``preprocessor_config.json``) into ``folder``.

    Args:
        folder: a model folder in ``save_pretrained`` layout.
        sampling_rate: the encoder's input rate, in Hz.
        do_normalize: whether inputs are standardised per clip.
        attention_mask: whether the encoder takes a padding mask.
    """
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sampling_rate, padding_value=0.0, do_normalize=do_normalize,
        return_attention_mask=attention_mask,
    ).save_pretrained(folder)
