"""Pure helpers of the embedding service: layer selection, batch planning, device choice."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import torch

from serlens.shared.errors import InvalidConfigError
from serlens.shared.fast_wavlm import FastWavLM, frame_lengths
from serlens.shared.models import ModelBundle, length_groups, masked_mean
from serlens.shared.whisper import WhisperAudioEncoder, min_samples, window_frames


def select_layers(layers: Sequence[int] | None, num_hidden_states: int) -> tuple[int, ...]:
    """Validate hidden-state indices against a model; None means all of them.

    Args:
        layers: indices to keep (0 = CNN feature projection + positional convolution,
            i = output of transformer layer i), or None.
        num_hidden_states: the model's ``num_layers + 1``.

    Returns:
        the indices, in the order given.

    Raises:
        InvalidConfigError: empty, repeated, non-integer or out-of-range indices; the
            message names the value and the valid range.
    """
    if layers is None:
        return tuple(range(num_hidden_states))
    valid = f"valid: 0..{num_hidden_states - 1} (0 = CNN feature projection + positional convolution)"
    layers = list(layers)
    if not layers:
        raise InvalidConfigError(f"layers: empty selection; {valid}, or None for all")
    for index in layers:
        if isinstance(index, bool) or not isinstance(index, Integral):
            raise InvalidConfigError(f"layers: {index!r} is not an integer index; {valid}")
    chosen = tuple(int(i) for i in layers)
    for index in chosen:
        if not 0 <= index < num_hidden_states:
            raise InvalidConfigError(f"layers: index {index} is out of range; {valid}")
    if len(set(chosen)) != len(chosen):
        raise InvalidConfigError(f"layers: repeated index in {list(chosen)}; {valid}")
    return chosen


def num_frames(samples: int, conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> int:
    """Output frames of a wav2vec2-style CNN for a clip of ``samples`` samples (0 if too short).

    The same arithmetic as transformers' ``_get_feat_extract_output_lengths``.
    """
    for kernel, stride in zip(conv_kernel, conv_stride, strict=True):
        samples = max((samples - kernel) // stride + 1, 0)
    return samples


def plan_batches(
    lengths: Sequence[int],
    bundle: ModelBundle,
    *,
    frames: Sequence[int],
    max_batch_frames: int,
    batch_size: int | None = None,
) -> list[list[int]]:
    """Clip indices grouped into forward passes by a budget of padded frames.

    Groups come from ``serlens.shared.models.length_groups`` (longest first; equal lengths only for
    encoders without a padding mask), then are split so that no batch holds more than
    ``max_batch_frames`` padded frames (clips x the longest clip's frames): the work of a pass,
    not its number of clips, is what is bounded. A clip longer than the budget still gets a
    batch of its own.

    Args:
        lengths: number of samples of each clip (what equal-length grouping compares).
        bundle: the encoder's identity.
        frames: output frames of each clip (``num_frames``).
        max_batch_frames: most padded frames per batch.
        batch_size: most clips per batch, or None for no cap besides the budget.

    Returns:
        every index exactly once, in batches.
    """
    cap = len(lengths) if batch_size is None else batch_size
    batches: list[list[int]] = []
    for group in length_groups(lengths, bundle, max(cap, 1)):
        current: list[int] = []
        longest = 0
        for i in group:
            widest = max(longest, frames[i])
            if current and (len(current) + 1) * widest > max_batch_frames:
                batches.append(current)
                current, widest = [], frames[i]
            current.append(i)
            longest = widest
        batches.append(current)
    return batches


def pooled_states(
    encoder: FastWavLM, values: torch.Tensor, lengths: torch.Tensor, *, layers: Sequence[int], mask_padding: bool
) -> torch.Tensor:
    """Mean over each clip's valid frames of the hidden states ``layers``: (clips, len(layers), dim), float32.

    Args:
        encoder: the fast forward of the encoder.
        values: (clips, samples), ready for the encoder (standardised if it wants it).
        lengths: (clips,) real samples of each clip, on the same device.
        layers: hidden-state indices.
        mask_padding: pass the lengths to the encoder as a padding mask (a padded batch of a
            layer-norm encoder); equal-length batches skip it, for the same numbers.
    """
    states = encoder.hidden_states(values, lengths if mask_padding else None, layers=layers)
    steps = torch.arange(states[0].shape[1], device=values.device)
    valid = steps[None, :] < frame_lengths(encoder.model, lengths)[:, None]
    return torch.stack([masked_mean(h.float(), valid) for h in states], dim=1)


def receptive_field_samples(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> int:
    """Count the fewest samples that give one frame of a wav2vec2-style CNN feature encoder.

    Args:
        conv_kernel: kernel width of each convolution.
        conv_stride: stride of each convolution.

    Returns:
        e.g. 400 samples (25 ms at 16 kHz) for WavLM's kernels (10, 3, 3, 3, 3, 2, 2)
        and strides (5, 2, 2, 2, 2, 2, 2).
    """
    field, hop = 1, 1
    for kernel, stride in zip(conv_kernel, conv_stride, strict=True):
        field += (kernel - 1) * hop
        hop *= stride
    return field


def min_input_samples(model: torch.nn.Module) -> int:
    """Fewest samples that give the encoder one frame (Whisper: one STFT window)."""
    if isinstance(model, WhisperAudioEncoder):
        return min_samples(model)
    config: Any = model.config
    return receptive_field_samples(config.conv_kernel, config.conv_stride)


def max_input_samples(model: torch.nn.Module) -> int | None:
    """Most samples the encoder takes (Whisper's 30 s window), or None for no limit."""
    return model.max_samples if isinstance(model, WhisperAudioEncoder) else None


def frames_computed(model: torch.nn.Module, samples: int) -> int:
    """Frames the encoder computes for a clip of ``samples`` samples: the work a batch budget counts.

    Whisper computes its whole window whatever the clip's length.
    """
    if isinstance(model, WhisperAudioEncoder):
        return window_frames(model)
    config: Any = model.config
    return num_frames(samples, config.conv_kernel, config.conv_stride)


def uses_autocast(precision: str, device: str) -> bool:
    """Whether to run under bf16 autocast: only for ``bf16`` on CUDA (CPU stays fp32)."""
    return precision == "bf16" and device == "cuda"
