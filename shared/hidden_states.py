"""Hidden states as serlens defines them, whatever the installed transformers version returns.

The embedding service's Hugging Face path and the tests take every hidden state here; the fast
WavLM forward (``serlens.shared.fast_wavlm``) is checked against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from serlens.shared.errors import ModelLoadError
from serlens.shared.models import ModelBundle, frame_mask, masked_mean

#: What serlens calls hidden state i of an encoder with L transformer layers, whatever the
#: installed transformers version returns as ``hidden_states`` (4.x appends the last layer's
#: output *after* the stable-layer-norm encoder's final LayerNorm, 5.x *before* it):
#: 0 is the input of transformer layer 1 (the CNN feature projection plus the positional
#: convolution; for post-norm encoders such as wavlm-base, after the encoder's input
#: LayerNorm), and i >= 1 is the output of transformer layer i, always *before* any final
#: LayerNorm, so that every hidden state is the same residual stream.
HIDDEN_STATE_DEFINITION = (
    "0: CNN feature projection + positional convolution (input of transformer layer 1); "
    "i: output of transformer layer i, before the encoder's final LayerNorm"
)


def encoder_hidden_states(model: nn.Module, input_values: torch.Tensor, **kwargs: Any) -> list[torch.Tensor]:
    """Every hidden state of a wav2vec2-style encoder, as serlens defines them.

    Taken with forward hooks on the encoder's transformer layers, not from the model's
    ``hidden_states`` output, so the result does not depend on the transformers version
    (see ``HIDDEN_STATE_DEFINITION``).

    Args:
        model: an encoder from ``load_encoder`` (it has ``encoder.layers``).
        input_values: (batch, samples).
        kwargs: passed to the model (``attention_mask``).

    Returns:
        ``num_layers + 1`` tensors of shape (batch, frames, hidden_size).

    Raises:
        ModelLoadError: the model has no ``encoder.layers`` to hook.
    """
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if layers is None or len(layers) == 0:
        raise ModelLoadError(f"{type(model).__name__} has no encoder.layers; not a wav2vec2-style encoder")
    captured: list[torch.Tensor] = []

    def _input(_module: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        captured.append(args[0] if args else kw["hidden_states"])

    def _output(_module: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        captured.append(out[0] if isinstance(out, tuple) else out)

    handles = [layers[0].register_forward_pre_hook(_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(_output) for layer in layers]
    try:
        model(input_values, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def transformers_version() -> str:
    """The installed transformers version (recorded with every embedding row)."""
    import transformers

    return str(transformers.__version__)


def pooled_hidden_states(
    model: nn.Module,
    input_values: torch.Tensor,
    attention_mask: torch.Tensor,
    bundle: ModelBundle,
    *,
    layers: Sequence[int] | None = None,
    padded: bool = True,
) -> torch.Tensor:
    """Mean over valid frames of each hidden state: shape (batch, len(layers), dim).

    Args:
        model: the encoder.
        input_values: (batch, samples), from ``prepare_batch``.
        attention_mask: (batch, samples), 1 on real samples.
        bundle: the encoder's identity.
        layers: hidden states to pool (default: all).
        padded: whether any clip is padded; a batch of equal lengths skips the mask (the
            same numbers, without masking's extra work).
    """
    kwargs = {"attention_mask": attention_mask} if bundle.supports_padding_mask and padded else {}
    hidden = encoder_hidden_states(model, input_values, **kwargs)
    valid = frame_mask(model, attention_mask, hidden[0].shape[1])
    chosen = hidden if layers is None else [hidden[i] for i in layers]
    return torch.stack([masked_mean(h.float(), valid) for h in chosen], dim=1)
