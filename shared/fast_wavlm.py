"""A fast forward pass for Hugging Face's ``WavLMModel`` that shares its parameters.

transformers 5.x runs WavLM's attention through ``F.multi_head_attention_forward`` with
``need_weights=True``, which rules out the fused attention kernels on every layer, and it
rebuilds the ``(batch x heads, T, T)`` relative-position bias for every batch. ``FastWavLM``
computes the same numbers from the same modules:

- the CNN, the feature projection, the positional convolution, layer norms, feed-forwards and
  dropouts are Hugging Face's own submodules, called as they are;
- attention is one fused QKV projection and ``F.scaled_dot_product_attention``, with WavLM's
  gated relative-position bias (layer 0's bucket embedding, gated per layer and head by
  ``gru_rel_pos_linear``) added as an ``attn_mask`` in the query's dtype and padded keys set
  to ``-inf`` (what ``key_padding_mask`` does);
- the ungated bias is built once per sequence length on the model's device and cached while
  the weights it came from are unchanged; so is the fused QKV weight;
- it stops after the deepest hidden state asked for;
- optionally each encoder layer runs under ``torch.compile``.

In training mode it draws dropout, LayerDrop and SpecAugment in Hugging Face's order on tensors
of the same memory layout, so one seed gives the same forward; only attention dropout differs
(SDPA draws its own mask). Gradients reach the same parameters (nothing is cached under autograd).

Nothing is copied: the wrapper holds the model, so ``save_pretrained`` and every loader are
unaffected, and caches are keyed on the parameters' version counters so an optimizer step or
``load_state_dict`` invalidates them. Models it does not cover (another ``model_type``, an
adapter, attention outputs) go through the Hugging Face forward unchanged (``fallback_reason``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_Cache = dict[Any, tuple[Any, tuple[torch.Tensor, ...]]]


def fallback_reason(model: nn.Module) -> str | None:
    """Why ``FastWavLM`` would run ``model`` through Hugging Face's forward, or None if it covers it.

    Covered: ``transformers.WavLMModel`` in either variant (``do_stable_layer_norm`` True, as
    WavLM-large, or False, as WavLM-base), layer- or group-norm CNN, without an adapter.
    """
    from transformers import WavLMModel

    if not isinstance(model, WavLMModel):
        return f"{type(model).__name__} is not a WavLMModel"
    config = model.config
    if getattr(config, "add_adapter", False):
        return "config.add_adapter is set (adapter layers are not covered)"
    if getattr(config, "output_attentions", False):
        return "config.output_attentions is set (SDPA does not return attention weights)"
    return None


def frame_lengths(model: nn.Module, sample_lengths: torch.Tensor) -> torch.Tensor:
    """Output frames of each clip, from its number of samples (the CNN's arithmetic, on the device)."""
    return model._get_feat_extract_output_lengths(sample_lengths).to(torch.long)  # type: ignore[operator]


def _versions(*tensors: torch.Tensor) -> tuple[Any, ...]:
    # An in-place update (optimizer step, load_state_dict, .copy_) bumps a tensor's version.
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def _cached(cache: _Cache, name: Any, stamp: Any, sources: Sequence[torch.Tensor],
            build: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """``build()``, reused while ``stamp`` and ``sources`` are unchanged; never cached under autograd."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
        return build()  # gradients must flow into the parameters: build it in the graph
    if any(t.is_inference() for t in sources):
        return build()  # weights made under inference_mode have no version counter to key on
    full_stamp = (stamp, _versions(*sources))
    held = cache.get(name)
    if held is None or held[0] != full_stamp:
        held = cache[name] = (full_stamp, build())
    return held[1]


def _attention(attention: Any, hidden: torch.Tensor, bias: torch.Tensor,
               key_padding: torch.Tensor | None, qkv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``WavLMAttention.forward`` (gated relative-position bias) with fused QKV and SDPA."""
    batch, steps, width = hidden.shape
    heads, head_dim = attention.num_heads, attention.head_dim
    # The gate: the same steps as Hugging Face's WavLMAttention (1-3), per head and query.
    per_head = hidden.view(batch, steps, heads, head_dim).permute(0, 2, 1, 3)
    projected = attention.gru_rel_pos_linear(per_head).view(batch, heads, steps, 2, 4).sum(-1)
    gate_a, gate_b = torch.sigmoid(projected).chunk(2, dim=-1)
    gate = gate_a * (gate_b * attention.gru_rel_pos_const - 1.0) + 2.0  # (batch, heads, steps, 1)
    weight, bias_qkv = qkv
    q, k, v = F.linear(hidden, weight, bias_qkv).view(batch, steps, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    mask = (gate * bias).to(q.dtype)  # the query's dtype, as baddbmm casts it under autocast
    if key_padding is not None:
        mask = mask.masked_fill(key_padding[:, None, None, :], float("-inf"))
    dropout = attention.dropout if attention.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    # (steps, batch, width) in memory, as F.multi_head_attention_forward leaves it: the dropout
    # that follows then draws the same mask for the same seed as Hugging Face's forward.
    out = attention.out_proj(out.permute(2, 0, 1, 3).reshape(steps, batch, width))
    return out.transpose(0, 1)


def _layer(layer: Any, hidden: torch.Tensor, bias: torch.Tensor, key_padding: torch.Tensor | None,
           qkv: tuple[torch.Tensor, torch.Tensor], stable: bool) -> torch.Tensor:
    """One encoder layer, in either of Hugging Face's two orders of layer norms."""
    if stable:  # WavLMEncoderLayerStableLayerNorm: pre-norm
        attended = _attention(layer.attention, layer.layer_norm(hidden), bias, key_padding, qkv)
        hidden = hidden + layer.dropout(attended)
        return hidden + layer.feed_forward(layer.final_layer_norm(hidden))
    attended = _attention(layer.attention, hidden, bias, key_padding, qkv)  # WavLMEncoderLayer: post-norm
    hidden = layer.layer_norm(hidden + layer.dropout(attended))
    return layer.final_layer_norm(hidden + layer.feed_forward(hidden))


class FastWavLM:
    """Hidden states of a ``WavLMModel`` through fused attention, equal to Hugging Face's forward.

    Args:
        model: the encoder (kept, not copied: the wrapper adds no parameters).
        compile_layers: run each encoder layer under ``torch.compile`` (worth it on a GPU; off by
            default, since compiling costs tens of seconds and needs a C++ compiler on the CPU).

    Attributes:
        fallback: why Hugging Face's forward is used instead (None when the fast path runs).
    """

    def __init__(self, model: nn.Module, *, compile_layers: bool = False) -> None:
        self.model: Any = model  # Hugging Face's submodules, typed loosely there
        self.fallback = fallback_reason(model)
        self._caches: _Cache = {}
        self._bias_steps = 0
        self._layer = torch.compile(_layer, dynamic=None) if compile_layers and self.fallback is None else _layer

    @property
    def num_hidden_states(self) -> int:
        """The CNN projection plus every transformer layer."""
        return int(self.model.config.num_hidden_layers) + 1

    def hidden_states(self, input_values: torch.Tensor, sample_lengths: torch.Tensor | None = None, *,
                      layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Hidden states ``layers`` (default all), as Hugging Face's ``output_hidden_states`` numbers them.

        Index 0 is the input of the first transformer layer, index i the output of layer i (before
        the stable-layer-norm variant's final layer norm, as in transformers 5.x).

        Args:
            input_values: (batch, samples), already normalised if the model wants it.
            sample_lengths: (batch,) real samples of each clip, on the same device; None when no
                clip is padded (or the encoder takes no padding mask).
            layers: indices in ``0..num_layers``; the forward stops after the deepest one.

        Returns:
            one (batch, frames, hidden_size) tensor per index, in the order asked.
        """
        chosen = list(range(self.num_hidden_states)) if layers is None else list(layers)
        if self.fallback is not None:
            states = self.model(input_values, attention_mask=self._sample_mask(input_values, sample_lengths),
                                output_hidden_states=True).hidden_states
            return [states[i] for i in chosen]
        states, _ = self._run(input_values, sample_lengths, keep=set(chosen), final_norm=False)
        return [states[i] for i in chosen]

    def last_hidden_state(self, input_values: torch.Tensor,
                          sample_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Hugging Face's ``last_hidden_state`` (with the stable variant's final layer norm).

        Args:
            input_values: (batch, samples).
            sample_lengths: (batch,) real samples of each clip, or None for no padding mask.
        """
        if self.fallback is not None:
            mask = self._sample_mask(input_values, sample_lengths)
            return self.model(input_values, attention_mask=mask).last_hidden_state
        _, last = self._run(input_values, sample_lengths, keep={self.num_hidden_states - 1}, final_norm=True)
        return last

    @staticmethod
    def _sample_mask(input_values: torch.Tensor, sample_lengths: torch.Tensor | None) -> torch.Tensor | None:
        if sample_lengths is None:
            return None
        steps = torch.arange(input_values.shape[1], device=input_values.device)
        return (steps[None, :] < sample_lengths[:, None]).to(torch.long)

    def _run(self, input_values: torch.Tensor, sample_lengths: torch.Tensor | None, *, keep: set[int],
             final_norm: bool) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Hidden states ``keep`` (only those are held) and the last one computed (final norm if asked)."""
        model, encoder = self.model, self.model.encoder
        stable = bool(model.config.do_stable_layer_norm)
        features = model.feature_extractor(input_values).transpose(1, 2)
        valid = None
        if sample_lengths is not None:
            steps = torch.arange(features.shape[1], device=features.device)
            valid = steps[None, :] < frame_lengths(model, sample_lengths)[:, None]
        hidden, _ = model.feature_projection(features)
        hidden = model._mask_hidden_states(hidden, attention_mask=valid)
        if valid is not None:
            hidden = hidden.masked_fill(~valid[..., None], 0.0)  # as the encoder zeroes padded frames
        hidden = hidden + encoder.pos_conv_embed(hidden)
        if not stable:
            hidden = encoder.layer_norm(hidden)
        hidden = encoder.dropout(hidden)
        states = {0: hidden} if 0 in keep else {}
        bias = self._position_bias(hidden.shape[1])
        key_padding = None if valid is None else ~valid
        layerdrop = float(model.config.layerdrop) if model.training else 0.0
        for index, layer in enumerate(encoder.layers[: max(keep)]):
            # LayerDrop as Hugging Face draws it (one torch.rand per layer after the first).
            skipped = index > 0 and layerdrop > 0.0 and bool(torch.rand([]) < layerdrop)
            if not skipped:
                hidden = self._layer(layer, hidden, bias, key_padding, self._qkv(layer.attention), stable)
            if index + 1 in keep:
                states[index + 1] = hidden
        last = encoder.layer_norm(hidden) if final_norm and stable else hidden
        return states, last

    def _position_bias(self, steps: int) -> torch.Tensor:
        """Layer 0's ungated relative-position bias, (1, heads, steps, steps), built on the device.

        The bias depends only on the offset between positions, so the one built for the longest
        sequence so far serves every shorter one as its top-left corner.
        """
        first = self.model.encoder.layers[0].attention
        size = max(steps, self._bias_steps)
        (bias,) = _cached(self._caches, "bias", size, [first.rel_attn_embed.weight],
                          lambda: (first.compute_bias(size, size).unsqueeze(0),))
        # Grown only once built: a length whose bias does not fit in memory fails its own
        # request and leaves shorter ones the bias they had.
        self._bias_steps = size
        return bias[:, :, :steps, :steps]

    def _qkv(self, attention: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused (3 x width, width) projection, built from q, k, v as they are now.

        Under autocast (and without autograd) the cached copy is already in autocast's dtype,
        so the cast is paid once per weight update rather than once per batch.
        """
        parts = [attention.q_proj, attention.k_proj, attention.v_proj]
        sources = [p.weight for p in parts] + [p.bias for p in parts]
        device = sources[0].device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else sources[0].dtype
        weight, bias = _cached(self._caches, (id(attention), dtype), None, sources, lambda: (
            torch.cat([p.weight for p in parts]).to(dtype), torch.cat([p.bias for p in parts]).to(dtype)))
        return weight, bias
