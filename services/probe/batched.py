"""All probes at once: stacked tensors, one matmul per mini-batch, per-probe early stopping.

Same rules and same numbers as ``serlens.probe.naive.train_probe_naive`` (see
``serlens.probe.core``): feature sets are grouped by dimension and stacked; each cell holds
every seed's parameters ([C, S, ...], ``serlens.probe.heads``); each seed draws its own
mini-batches; Adam is PyTorch's own update on per-slot views (``serlens.probe.adam``); a
probe's parameters freeze at its own stop epoch while its best-validation parameters are kept
beside them; finished cells leave the stack and the next feature set takes their slot.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from threadpoolctl import threadpool_limits

from serlens.probe import heads
from serlens.probe.adam import SlotAdam
from serlens.probe.config import ProbeConfig
from serlens.probe.core import (
    ProbeResults,
    Split,
    _check_inputs,
    _EarlyStopping,
    _metrics,
    batch_order,
    single_threaded_ops,
    standardize_by_train,
)
from serlens.shared.models import resolve_device

#: Byte budget of one CPU worker's training state (parameters, Adam moments, gradients, best
#: parameters): small enough that the state and the gathered mini-batches of both workers stay
#: in the shared cache (3 cells of 1,024-d linear probes, 10 seeds each); measured on 2 cores.
_CPU_STATE_BYTES = 4 << 20
#: Byte budget of the stacked features on CUDA (all cells at once when they fit).
_CUDA_FEATURE_BYTES = 8 << 30

#: Result arrays, in ``ProbeResults`` order.
_FIELDS = ("f1_macro", "accuracy", "epochs", "val_loss", "f1_macro_best", "accuracy_best",
           "best_epoch", "val_loss_best", "predictions", "predictions_best")


@dataclass
class _Group:
    """The feature sets of one dimension and what every worker training them shares."""

    feature_sets: Sequence[np.ndarray]
    pending: Iterator[int]  # indices of the feature sets no worker has taken yet
    initial: list[torch.Tensor]  # [S, ...] per parameter: every seed's initial values
    labels: torch.Tensor
    parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    num_classes: int
    config: ProbeConfig
    decay: float
    results: dict[str, np.ndarray]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int | None:
        with self.lock:
            return next(self.pending, None)


@dataclass
class _Stack:
    """The cells one worker trains at once: features, parameters and per-probe state."""

    x_parts: list[torch.Tensor]  # train, val, test: [C, n_part, d]
    optimizer: SlotAdam
    best: list[torch.Tensor]  # best-validation parameters, stacked like the parameters
    stopping: _EarlyStopping
    active: torch.Tensor  # [C, S]
    last_loss: torch.Tensor  # [C, S] validation loss at the stop
    cells: list[int]  # feature set per slot, -1 when free
    epochs: np.ndarray  # [C]
    stop_epoch: np.ndarray  # [C, S]
    best_epoch: np.ndarray  # [C, S]

    def keep(self, live: list[int]) -> None:
        rows = torch.tensor(live, device=self.active.device)
        self.x_parts = [x[rows] for x in self.x_parts]
        self.best = [b[rows] for b in self.best]
        self.active, self.last_loss = self.active[rows], self.last_loss[rows]
        self.optimizer.keep(rows)
        self.stopping.keep(rows)
        self.cells = [self.cells[s] for s in live]
        self.epochs, self.stop_epoch = self.epochs[live], self.stop_epoch[live]
        self.best_epoch = self.best_epoch[live]


def _new_stack(group: _Group, capacity: int) -> _Stack:
    config, seeds = group.config, group.config.seeds
    device = group.labels.device
    dim = group.initial[0].shape[-1]
    params = [torch.empty(capacity, *p.shape, device=device) for p in group.initial]
    return _Stack(
        x_parts=[torch.empty(capacity, len(p), dim, device=device) for p in group.parts],
        optimizer=SlotAdam(params, lr=config.lr),
        best=[torch.empty_like(p) for p in params],
        stopping=_EarlyStopping((capacity, seeds), patience=config.patience,
                                min_delta=config.min_delta, device=device),
        active=torch.zeros(capacity, seeds, dtype=torch.bool, device=device),
        last_loss=torch.full((capacity, seeds), math.nan, dtype=torch.float64, device=device),
        cells=[-1] * capacity,
        epochs=np.zeros(capacity, dtype=np.int64),
        stop_epoch=np.zeros((capacity, seeds), dtype=np.int64),
        best_epoch=np.zeros((capacity, seeds), dtype=np.int64),
    )


def _refill(group: _Group, stack: _Stack) -> None:
    """Give every free slot the next feature set, standardised by its train part."""
    for slot in range(len(stack.cells)):
        index = group.take() if stack.cells[slot] < 0 else None
        if index is None:
            continue
        raw = torch.as_tensor(
            np.asarray(group.feature_sets[index], dtype=np.float32), device=group.labels.device
        )
        features = standardize_by_train(raw, group.parts[0])
        for x, part in zip(stack.x_parts, group.parts, strict=True):
            torch.index_select(features, 0, part, out=x[slot])
        stack.optimizer.reset(slot, group.initial)
        for best, value in zip(stack.best, group.initial, strict=True):
            best[slot].copy_(value)
        stack.stopping.reset(slot)
        stack.active[slot], stack.last_loss[slot] = True, math.nan
        stack.epochs[slot], stack.stop_epoch[slot], stack.best_epoch[slot] = 0, 0, 0
        stack.cells[slot] = index


def _epoch(group: _Group, stack: _Stack, orders: dict[int, np.ndarray]) -> None:
    """One pass of stacked mini-batch steps over every slot, each seed in its own order."""
    config, k = group.config, group.num_classes
    size, seeds = stack.active.shape
    x_train = stack.x_parts[0]
    num_train, dim = x_train.shape[1], x_train.shape[2]
    device = x_train.device
    for epoch in set(stack.epochs.tolist()) - orders.keys():
        orders[epoch] = np.stack([batch_order(num_train, epoch, s, config.split_seed)
                                  for s in range(seeds)])
    order = torch.as_tensor(np.stack([orders[e] for e in stack.epochs]), device=device)  # [C,S,n]
    flat = order + torch.arange(size, device=device).view(size, 1, 1) * num_train
    rows_train = x_train.view(size * num_train, dim)
    # One-hot targets of every seed's mini-batches, in visiting order: [C, S, n, K].
    targets = F.one_hot(group.labels[group.parts[0]], k).to(x_train.dtype)[order]
    mask = stack.active.to(x_train.dtype).view(size, seeds, 1, 1)
    # (softmax - one-hot) times this is the gradient: 1/B for training probes, 0 for stopped.
    scales = {b: mask / b for b in {config.batch_size, num_train % config.batch_size} - {0}}
    params = stack.optimizer.params
    for start in range(0, num_train, config.batch_size):
        stop = start + config.batch_size
        batch = min(stop, num_train) - start
        x_batch = rows_train.index_select(0, flat[:, :, start:stop].reshape(-1))
        x_batch = x_batch.view(size, seeds, batch, dim)
        logits, hidden = heads.forward(params, x_batch)
        delta = heads.softmax_delta(logits, targets[:, :, start:stop], scales[batch])
        grads = heads.backward(params, x_batch, hidden, delta)
        if group.decay:  # Adam's L2 weight decay, masked so that stopped probes stay frozen
            grads = [g.add_(p * (mask * group.decay)) for g, p in zip(grads, params, strict=True)]
        stack.optimizer.step(grads)


def _validate(group: _Group, stack: _Stack) -> torch.Tensor:
    """Validation losses [C, S]; early stopping; best parameters kept. Returns who stopped."""
    y_val = group.labels[group.parts[1]]
    logits, _ = heads.forward(stack.optimizer.params, stack.x_parts[1].unsqueeze(1))
    picked = logits.log_softmax(-1).gather(
        -1, y_val.view(1, 1, -1, 1).expand(*logits.shape[:3], 1)
    )
    val_loss = -picked.squeeze(-1).mean(dim=2)  # [C, S]
    stopped = stack.stopping.update(val_loss, stack.active)
    improved = stack.stopping.improved
    if bool(improved.any()):
        for best, param in zip(stack.best, stack.optimizer.params, strict=True):
            best.copy_(torch.where(improved.view(*improved.shape, 1, 1), param, best))
        slots, seed_idx = np.nonzero(improved.cpu().numpy())
        stack.best_epoch[slots, seed_idx] = stack.epochs[slots]
    at_max = torch.as_tensor(stack.epochs >= group.config.max_epochs, device=stopped.device)
    stopped |= stack.active & at_max.unsqueeze(1)
    stack.last_loss = torch.where(stopped, val_loss.double(), stack.last_loss)
    return stopped


def _finish(group: _Group, stack: _Stack, finished: torch.Tensor) -> None:
    """Test the finished slots at their stop and best parameters; free the slots."""
    y_test = group.labels[group.parts[2]]
    x_test = stack.x_parts[2][finished].unsqueeze(1)
    outputs: dict[str, Any] = {}
    for name, params in (("", stack.optimizer.params), ("_best", stack.best)):
        logits, _ = heads.forward([p[finished] for p in params], x_test)
        predicted = logits.argmax(-1)  # [c, S, n_test]
        f1, accuracy = _metrics(predicted, y_test, group.num_classes)
        outputs |= {f"f1_macro{name}": f1, f"accuracy{name}": accuracy,
                    f"predictions{name}": predicted}
    outputs = {key: value.cpu().numpy() for key, value in outputs.items()}
    outputs["val_loss_best"] = stack.stopping.best[finished].cpu().numpy()
    outputs["val_loss"] = stack.last_loss[finished].cpu().numpy()
    slots = finished.tolist()
    outputs["epochs"], outputs["best_epoch"] = stack.stop_epoch[slots], stack.best_epoch[slots]
    for j, slot in enumerate(slots):
        for name in _FIELDS:
            group.results[name][stack.cells[slot]] = outputs[name][j]
        stack.cells[slot] = -1


def _train_worker(group: _Group, capacity: int) -> None:
    """Train cells of ``group`` in ``capacity`` slots until none is left.

    Every epoch is one pass of stacked mini-batch steps over all slots (each slot at its own
    epoch); after it, per-probe early stopping, and a slot whose probes have all stopped is
    tested and takes the next cell. When no cell is left, finished slots are dropped.
    """
    stack = _new_stack(group, capacity)
    orders: dict[int, np.ndarray] = {}
    while True:
        _refill(group, stack)
        live = [slot for slot, cell in enumerate(stack.cells) if cell >= 0]
        if not live:
            return
        if len(live) < len(stack.cells):  # nothing left to take: drop the finished slots
            stack.keep(live)
        stack.epochs += 1
        _epoch(group, stack, orders)
        stopped = _validate(group, stack)
        if not bool(stopped.any()):
            continue
        slots, seed_idx = np.nonzero(stopped.cpu().numpy())
        stack.stop_epoch[slots, seed_idx] = stack.epochs[slots]
        stack.optimizer.freeze(stopped)
        stack.active &= ~stopped
        finished = torch.nonzero(~stack.active.any(dim=1)).flatten()
        if len(finished):
            _finish(group, stack, finished)


def _capacity(dim: int, per_cell: int, num_clips: int, device: torch.device) -> int:
    """Cells a worker trains at once: on the CPU, as many as keep their state in cache."""
    if device.type == "cuda":
        return max(1, _CUDA_FEATURE_BYTES // (4 * num_clips * dim))
    return max(1, _CPU_STATE_BYTES // (4 * 5 * per_cell))  # params, 2 moments, grads, best


def train_probes(
    feature_sets: Sequence[np.ndarray],
    y: np.ndarray,
    split: Split,
    *,
    config: ProbeConfig,
    head: heads.HeadKind = "linear",
    cells_per_worker: int | None = None,
) -> ProbeResults:
    """Train and test ``config.seeds`` probes on every feature set, all at once.

    Feature sets of the same dimension d are stacked into tensors [C, n, d] and their probes'
    parameters into [C, seeds, ...]: each mini-batch is one batched forward and backward for
    every probe, and one Adam step on the stacked parameters. Early stopping is per probe, by
    masks (a stopped probe's gradient is masked to zero and its Adam moment cleared, so its
    weights stay exactly those of its stop epoch). A cell whose probes have all stopped is
    tested at its stop and best-validation weights and its slot refilled with the next feature
    set. On the CPU, one worker per torch thread trains its own stack of cells (ops
    single-threaded, stacks small enough to stay in cache); on CUDA, one stack holds every
    cell that fits. The results do not depend on either.

    Args:
        feature_sets: arrays n x d_i, row j of each for clip j.
        y: n class codes 0..K-1.
        split: ``(train_idx, val_idx, test_idx)``.
        config: the training rules (seeds, batch size, lr, early stopping, device, MLP size).
        head: ``linear`` or ``mlp``.
        cells_per_worker: cells a worker stacks (None: chosen for the device and dimension).

    Returns:
        ``ProbeResults`` with arrays [len(feature_sets), config.seeds] (and test predictions).

    Raises:
        InvalidInputError: a feature set with another row count than ``y``, NaN, a bad split.
        InvalidConfigError: an unavailable device.
    """
    codes, num_classes = _check_inputs(feature_sets, y, split)
    device = resolve_device(config.device)
    shape = (len(feature_sets), config.seeds)
    results = {name: np.full(shape, np.nan) for name in _FIELDS[:8]}
    results["epochs"], results["best_epoch"] = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    for name in _FIELDS[8:]:
        results[name] = np.zeros((*shape, len(split[2])), dtype=np.int64)
    labels = torch.as_tensor(codes, device=device)
    parts = tuple(torch.as_tensor(np.asarray(p), dtype=torch.int64, device=device) for p in split)
    by_dim: dict[int, list[int]] = defaultdict(list)
    for i, x in enumerate(feature_sets):
        by_dim[np.asarray(x).shape[1]].append(i)

    threads = torch.get_num_threads() if device.type == "cpu" else 1
    # One thread per op on the CPU (torch's and the BLAS numpy's products use), one worker per core.
    with (single_threaded_ops() if threads > 1 else nullcontext(),
          threadpool_limits(1, user_api="blas") if device.type == "cpu" else nullcontext()):
        for dim, members in by_dim.items():
            inits = [heads.init_params(head, dim, num_classes, s, config.mlp_hidden)
                     for s in range(config.seeds)]
            group = _Group(
                feature_sets=feature_sets, pending=iter(members),
                initial=[torch.stack(p).to(device) for p in zip(*inits, strict=True)],
                labels=labels, parts=parts,  # type: ignore[arg-type]
                num_classes=num_classes, config=config,
                decay=config.mlp_weight_decay if head == "mlp" else 0.0, results=results,
            )
            workers = min(threads, len(members))
            per_cell = sum(p.numel() for p in group.initial)
            capacity = cells_per_worker or _capacity(dim, per_cell, len(codes), device)
            capacity = min(capacity, -(-len(members) // workers))
            if workers == 1:
                _train_worker(group, capacity)
                continue
            with ThreadPoolExecutor(workers, thread_name_prefix="probes") as pool:
                for future in [pool.submit(_train_worker, group, capacity) for _ in range(workers)]:
                    future.result()
    return ProbeResults(**results)
