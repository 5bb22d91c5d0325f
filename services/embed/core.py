"""Pure helpers of the embedding service: layer selection, batch planning, device choice."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

from serlens.shared.errors import InvalidConfigError
from serlens.shared.models import ModelBundle, length_groups


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


def plan_batches(
    lengths: Sequence[int], bundle: ModelBundle, *, batch_size: int, max_batch_samples: int
) -> list[list[int]]:
    """Clip indices grouped into forward passes.

    Groups come from ``serlens.shared.models.length_groups`` (longest first; equal lengths only for
    encoders without a padding mask), then are split so that no batch holds more than
    ``max_batch_samples`` padded samples (clips x longest clip). A clip longer than the cap
    still gets a batch of its own.

    Args:
        lengths: number of samples of each clip.
        bundle: the encoder's identity.
        batch_size: most clips per batch.
        max_batch_samples: most padded samples per batch.

    Returns:
        every index exactly once, in batches.
    """
    batches: list[list[int]] = []
    for group in length_groups(lengths, bundle, batch_size):
        current: list[int] = []
        for i in group:
            longest = max(lengths[j] for j in (*current, i))
            if current and (len(current) + 1) * longest > max_batch_samples:
                batches.append(current)
                current = []
            current.append(i)
        batches.append(current)
    return batches


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


def resolve_device(requested: str, cuda_available: bool) -> str:
    """Where the model runs: ``auto`` picks CUDA when there is one.

    Raises:
        InvalidConfigError: ``cuda`` requested where there is none, or an unknown device.
    """
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested == "cuda" and not cuda_available:
        raise InvalidConfigError(
            "embed.device: 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'"
        )
    if requested not in ("cpu", "cuda"):
        raise InvalidConfigError(f"embed.device: {requested!r}; expected 'auto', 'cpu' or 'cuda'")
    return requested


def uses_autocast(precision: str, device: str) -> bool:
    """Whether to run under bf16 autocast: only for ``bf16`` on CUDA (CPU stays fp32)."""
    return precision == "bf16" and device == "cuda"
