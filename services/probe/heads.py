"""Probe heads on stacked tensors: a linear layer, or an MLP with one hidden ReLU layer.

Weights are kept in ``nn.Linear``'s ``[..., out, in]`` orientation (``x @ wᵀ + b``), stacked over
any leading axes (cells, seeds), so one batched matmul serves every probe; with few outputs
(K = 6 classes) this layout keeps each probe's batched products on fast kernels. The backward pass is written
out: the vectorised trainer needs the gradient of every probe at once, from the gradient of
the mean cross-entropy with respect to the logits.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

HeadKind = Literal["linear", "mlp"]

HEADS: tuple[str, ...] = ("linear", "mlp")


def shapes(kind: HeadKind, dim: int, num_classes: int, hidden: int) -> list[tuple[int, int]]:
    """Shapes of each parameter: weights ``(out, in)``, biases ``(1, out)``."""
    if kind == "linear":
        return [(num_classes, dim), (1, num_classes)]
    return [(hidden, dim), (1, hidden), (num_classes, hidden), (1, num_classes)]


def init_params(
    kind: HeadKind, dim: int, num_classes: int, seed: int, hidden: int
) -> list[torch.Tensor]:
    """The initial parameters of the probe of seed ``seed`` (``nn.Linear``'s distribution).

    Each layer's weight and bias are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), in the
    order weight, bias of layer 1, then of layer 2, from a generator seeded with ``seed``.

    Returns:
        float32 CPU tensors in ``shapes`` order and orientation.
    """
    generator = torch.Generator().manual_seed(int(seed))
    widths = [dim, num_classes] if kind == "linear" else [dim, hidden, num_classes]
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        bound = 1.0 / math.sqrt(fan_in)
        weight = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=generator)
        bias = torch.empty(fan_out).uniform_(-bound, bound, generator=generator)
        params += [weight, bias.unsqueeze(0)]
    return params


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` (batched, broadcast); on the CPU through numpy's BLAS.

    For these stacks of small products (16 x 1,024 by 1,024 x 6 per probe) numpy's OpenBLAS is
    2-3x faster than torch's CPU kernels, and it releases the GIL as torch does. The tensors
    share memory with the arrays (no copies); none of them carries autograd state.
    """
    if a.device.type != "cpu":
        return torch.matmul(a, b)
    return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ wᵀ + b``, computed as ``(w @ xᵀ)ᵀ``: the faster product when the outputs are few."""
    return matmul(weight, x.transpose(-1, -2)).transpose(-1, -2).add_(bias)


def forward(
    params: list[torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits [..., n, K] of inputs x [..., n, d], and the hidden activations (MLP) or None."""
    if len(params) == 2:
        return _linear(x, params[0], params[1]), None
    hidden = _linear(x, params[0], params[1]).clamp_min_(0.0)
    return _linear(hidden, params[2], params[3]), hidden


def backward(
    params: list[torch.Tensor], x: torch.Tensor, hidden: torch.Tensor | None, delta: torch.Tensor
) -> list[torch.Tensor]:
    """Gradients of every parameter, given ``delta`` = d(loss)/d(logits) [..., n, K]."""
    # [..., K, n]: fast products for small K (a view when delta came from ``forward``'s layout).
    delta_t = delta.transpose(-1, -2).contiguous()
    if hidden is None:
        return [matmul(delta_t, x), delta.sum(dim=-2, keepdim=True)]
    back = matmul(delta, params[2]).mul_(hidden > 0)
    return [
        matmul(back.transpose(-1, -2).contiguous(), x),
        back.sum(dim=-2, keepdim=True),
        matmul(delta_t, hidden),
        delta.sum(dim=-2, keepdim=True),
    ]


def softmax_delta(logits: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(softmax - one-hot) x scale: the gradient of the scaled cross-entropy at the logits.

    A hand-written softmax: ``torch.softmax`` is several times slower over K = 6 classes.
    """
    delta = logits.sub(logits.amax(dim=-1, keepdim=True)).exp_()
    delta.div_(delta.sum(dim=-1, keepdim=True))
    return delta.sub_(targets).mul_(scale)
