"""One probe at a time: the by-itself reference of the rules in ``serlens.probe.core``.

``torch.nn`` modules, autograd and ``torch.optim.Adam``: what a reader would write to train a
single probe. ``serlens.probe.batched.train_probes`` must give the same epochs and F1 for the
same seed, feature set and split; the tests and ``benchmarks/bench_probes.py`` check it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from serlens.probe.config import ProbeConfig
from serlens.probe.core import (
    ProbeOutcome,
    Split,
    _check_inputs,
    _EarlyStopping,
    _metrics,
    batch_order,
    standardize_by_train,
)
from serlens.probe.heads import HeadKind, init_params
from serlens.shared.models import resolve_device


def build_probe(kind: HeadKind, dim: int, num_classes: int, seed: int, hidden: int) -> nn.Module:
    """``nn.Linear`` (or Linear-ReLU-Linear) holding the initial weights of seed ``seed``."""
    widths = [dim, num_classes] if kind == "linear" else [dim, hidden, num_classes]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    probe = nn.Sequential(*layers[:-1])
    params = init_params(kind, dim, num_classes, seed, hidden)
    linears = [m for m in probe if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, linear in enumerate(linears):
            linear.weight.copy_(params[2 * i])
            linear.bias.copy_(params[2 * i + 1].squeeze(0))
    return probe


def train_probe_naive(
    x: np.ndarray,
    y: np.ndarray,
    split: Split,
    *,
    seed: int,
    config: ProbeConfig,
    head: HeadKind = "linear",
) -> ProbeOutcome:
    """Train and test one probe by itself.

    Args:
        x: n x d features (one clip per row).
        y: n class codes 0..K-1.
        split: ``(train_idx, val_idx, test_idx)``.
        seed: the probe's seed (sets its initial weights and batch order).
        config: the training rules.
        head: ``linear`` or ``mlp`` (``config.mlp_hidden`` units, ``config.mlp_weight_decay``).

    Returns:
        The probe's ``ProbeOutcome`` (stop and best-validation weights).

    Raises:
        InvalidInputError: shapes that do not match, NaN features, a bad split.
        InvalidConfigError: an unavailable device.
    """
    codes, num_classes = _check_inputs([x], y, split)
    device = resolve_device(config.device)
    train_idx, val_idx, test_idx = (
        torch.as_tensor(p, dtype=torch.int64, device=device) for p in split
    )
    features = standardize_by_train(
        torch.as_tensor(np.asarray(x), device=device).float(), train_idx
    )
    labels = torch.as_tensor(codes, device=device)
    x_train, y_train = features[train_idx], labels[train_idx]
    x_val, y_val = features[val_idx], labels[val_idx]

    probe = build_probe(head, features.shape[1], num_classes, seed, config.mlp_hidden).to(device)
    decay = config.mlp_weight_decay if head == "mlp" else 0.0
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr, weight_decay=decay)
    stopping = _EarlyStopping(
        (), patience=config.patience, min_delta=config.min_delta, device=device
    )
    active = torch.tensor(True, device=device)
    best_state, best_epoch = copy.deepcopy(probe.state_dict()), 0

    for epoch in range(1, config.max_epochs + 1):
        order = torch.as_tensor(
            batch_order(len(train_idx), epoch, seed, config.split_seed), device=device
        )
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = F.cross_entropy(probe(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = F.cross_entropy(probe(x_val), y_val)
        stop = bool(stopping.update(val_loss, active))
        if bool(stopping.improved):
            best_state, best_epoch = copy.deepcopy(probe.state_dict()), epoch
        if stop or epoch == config.max_epochs:
            break
    with torch.no_grad():
        predicted = probe(features[test_idx]).argmax(-1)
        probe.load_state_dict(best_state)
        predicted_best = probe(features[test_idx]).argmax(-1)
    f1, accuracy = _metrics(predicted, labels[test_idx], num_classes)
    f1_best, accuracy_best = _metrics(predicted_best, labels[test_idx], num_classes)
    return ProbeOutcome(
        float(f1), float(accuracy), epoch, float(val_loss), float(f1_best),
        float(accuracy_best), best_epoch, float(stopping.best),
    )
