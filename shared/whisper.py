"""Whisper's encoder as a serlens speech encoder: raw 16 kHz samples in, hidden states out.

Whisper reads log-mel spectrograms, not samples, and always sees a 30 s window (its
positional embedding has ``max_source_positions`` = 1500 frames): shorter clips are padded
with silence and the encoder attends to the padding, as it did in pre-training. So
``WhisperAudioEncoder`` takes what every other serlens encoder takes (samples and a sample
mask), computes the log-mel input with the model's own ``WhisperFeatureExtractor``
(``padding="max_length"``, each clip padded on its own, so a clip's numbers never depend on
its batch), and reports each clip's valid frames so that pooling leaves the padding out:
``ceil(samples / hop_length / 2)`` frames, the 2 being the stride of the second convolution.
Clips longer than the window are refused, never truncated.

Loading goes through ``WhisperForAudioClassification`` (the encoder of any Whisper
checkpoint, decoder weights ignored); only its encoder is kept, and serlens' own head pools
over valid frames only (``WhisperForAudioClassification`` itself averages the padding in).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from serlens.shared.errors import InvalidAudioError

#: Shapes of the tiny random Whisper of the tests (real code path, fake weights; 30 s window).
TINY_WHISPER = dict(
    d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
    decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=128, num_mel_bins=80,
    max_source_positions=1500, vocab_size=128, max_target_positions=32,
    pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
)


class WhisperAudioEncoder(nn.Module):
    """Whisper's encoder behind the interface of a wav2vec2-style encoder.

    Args:
        encoder: a ``transformers`` ``WhisperEncoder``.
        extractor: its ``WhisperFeatureExtractor``.

    Attributes:
        encoder: the Whisper encoder (its ``layers`` are what ``encoder_hidden_states`` hooks).
        config: the model's ``WhisperConfig``.
        max_samples: the window, in samples (30 s at 16 kHz for every released Whisper).
    """

    def __init__(self, encoder: nn.Module, extractor: Any) -> None:
        super().__init__()
        self.encoder: Any = encoder  # transformers' WhisperEncoder, typed loosely there
        self.extractor = extractor
        self.config: Any = encoder.config
        self.max_samples = int(extractor.n_samples)
        self.hop_length = int(extractor.hop_length)

    def _get_feat_extract_output_lengths(self, sample_lengths: torch.Tensor | int) -> torch.Tensor:
        """Valid encoder frames of clips of ``sample_lengths`` samples: ``ceil(samples / hop / 2)``.

        A mel frame is centred on every ``hop_length``-th sample; the second convolution
        (stride 2) halves the frames. Capped at the window's frames.
        """
        lengths = torch.as_tensor(sample_lengths)
        frames = torch.div(lengths + 2 * self.hop_length - 1, 2 * self.hop_length, rounding_mode="floor")
        return frames.clamp(max=int(self.config.max_source_positions))

    def log_mel(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel input of each clip, padded to the window: ``(batch, num_mel_bins, window frames)``.

        Raises:
            InvalidAudioError: a clip longer than the window (Whisper would silently cut it).
        """
        lengths = (attention_mask.sum(-1) if attention_mask is not None
                   else torch.full((input_values.shape[0],), input_values.shape[1])).tolist()
        too_long = [i for i, n in enumerate(lengths) if n > self.max_samples]
        if too_long:
            window_s = self.max_samples / self.extractor.sampling_rate
            raise InvalidAudioError(
                f"clip(s) {too_long} of the batch are longer than Whisper's {window_s:g} s window "
                f"({max(lengths[i] for i in too_long)} samples); cut them into segments (manifest start/end)")
        host = input_values.detach().float().cpu().numpy()
        clips = [np.ascontiguousarray(host[i, : int(n)]) for i, n in enumerate(lengths)]
        features = self.extractor(clips, sampling_rate=int(self.extractor.sampling_rate), padding="max_length",
                                  return_tensors="pt").input_features
        return features.to(device=input_values.device, dtype=next(self.encoder.parameters()).dtype)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        """The encoder's output (``last_hidden_state``: after its final LayerNorm, all window frames)."""
        return self.encoder(self.log_mel(input_values, attention_mask))

    def freeze_feature_encoder(self) -> None:
        """Keep the two input convolutions as pre-trained (the counterpart of wav2vec2's CNN)."""
        for conv in (self.encoder.conv1, self.encoder.conv2):
            for parameter in conv.parameters():
                parameter.requires_grad = False

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Write the encoder in ``WhisperForAudioClassification`` layout and its feature extractor."""
        from transformers import WhisperForAudioClassification

        shell: Any = WhisperForAudioClassification(self.config)
        shell.encoder = self.encoder
        shell.save_pretrained(folder)
        self.extractor.save_pretrained(folder)


def load_whisper_encoder(name_or_path: str, *, revision: str | None, offline: bool) -> WhisperAudioEncoder:
    """The encoder of a Whisper checkpoint (hub id or folder) and its feature extractor.

    Raises:
        OSError, ValueError: as ``from_pretrained`` does (the caller names the model).
    """
    from transformers import WhisperFeatureExtractor, WhisperForAudioClassification

    where: dict[str, Any] = {"local_files_only": offline, **({"revision": revision} if revision else {})}
    model = WhisperForAudioClassification.from_pretrained(name_or_path, **where)
    extractor = WhisperFeatureExtractor.from_pretrained(name_or_path, **where)
    return WhisperAudioEncoder(model.encoder, extractor)


def create_random_whisper(path: str | os.PathLike[str], *, seed: int = 0, **overrides: Any) -> Path:
    """Write a randomly initialised tiny Whisper (weights + feature extractor) with ``save_pretrained``.

    Args:
        path: folder to write.
        seed: torch seed for the initialisation.
        overrides: ``WhisperConfig`` fields replacing ``TINY_WHISPER``.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    folder = Path(path)
    torch.manual_seed(seed)
    config = WhisperConfig(**{**TINY_WHISPER, **overrides})
    config.serlens_random_init = True
    WhisperModel(config).save_pretrained(folder)  # the full model, as released checkpoints are
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(folder)
    return folder


def window_frames(model: WhisperAudioEncoder) -> int:
    """Frames every clip costs, padded or not (the whole window)."""
    return int(model.config.max_source_positions)


def min_samples(model: WhisperAudioEncoder) -> int:
    """Fewest samples for one whole STFT window (``n_fft``)."""
    return int(model.extractor.n_fft)
