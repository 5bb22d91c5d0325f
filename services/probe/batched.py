"""All probes at once: stacked tensors, one matmul per mini-batch, per-probe early stopping.

Same rules and same numbers as ``serlens.probe.core.train_probe_naive`` (see that module's
docstring): feature sets are grouped by dimension and stacked; each cell holds every seed's
weights; Adam is PyTorch's own update on per-slot views; a probe's weights freeze at its own
stop epoch; finished cells leave the stack and the next feature set takes their slot.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch.optim.adam import adam as adam_update

from serlens.probe.config import ProbeConfig
from serlens.probe.core import (
    ProbeResults,
    Split,
    _check_inputs,
    _EarlyStopping,
    _metrics,
    batch_order,
    init_weights,
    resolve_device,
    standardize_by_train,
)

#: ``torch.optim.Adam``'s defaults, which ``train_probe_naive`` uses.
_BETAS = (0.9, 0.999)
_EPS = 1e-8

#: Byte budget of one CPU worker's training state (weights, Adam moments, gradient), so that
#: it stays in cache across mini-batches.
_CPU_STATE_BYTES = 8 << 20
#: Byte budget of the stacked features on CUDA (all cells at once when they fit).
_CUDA_FEATURE_BYTES = 8 << 30

class _SlotAdam:
    """Adam on stacked probe weights: one step count per slot, per-probe freezing.

    ``weight`` [C, d, S*K] and ``bias`` [C, 1, S*K] hold the probes of the C cells in training
    (slot c, seed s, class k at column s*K + k); the Adam moments are stacked the same way.
    Each slot's rows are their own tensors in the update (views), with their own step count, so
    a slot can take a new cell while the others go on. The update is PyTorch's own Adam
    (``torch.optim.adam.adam``, fused: one pass over every slot), with ``torch.optim.Adam``'s
    defaults, as in ``train_probe_naive``.

    A probe is frozen by clearing its first moment while its gradient is masked to zero from
    then on: Adam's update ``m / (sqrt(v) + eps)`` is then exactly 0, so its weights stay
    bit-for-bit those of its stop epoch.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, *, lr: float) -> None:
        self.lr = lr
        self.params = [weight, bias]
        self.exp_avg = [torch.zeros_like(weight), torch.zeros_like(bias)]
        self.exp_avg_sq = [torch.zeros_like(weight), torch.zeros_like(bias)]
        # One count per slot and tensor (the update increments each listed count once).
        self.steps = torch.zeros(2, weight.shape[0], dtype=torch.float32, device=weight.device)
        self._views()

    @property
    def weight(self) -> torch.Tensor:
        return self.params[0]

    @property
    def bias(self) -> torch.Tensor:
        return self.params[1]

    def _views(self) -> None:
        def per_slot(pair: list[torch.Tensor]) -> list[torch.Tensor]:
            return [*pair[0].unbind(0), *pair[1].unbind(0)]

        self._slots = [per_slot(t) for t in (self.params, self.exp_avg, self.exp_avg_sq)]
        self._steps = [*self.steps[0].unbind(0), *self.steps[1].unbind(0)]

    def step(self, grad_weight: torch.Tensor, grad_bias: torch.Tensor) -> None:
        params, exp_avgs, exp_avg_sqs = self._slots
        adam_update(
            params,
            [*grad_weight.unbind(0), *grad_bias.unbind(0)],
            exp_avgs,
            exp_avg_sqs,
            [],
            self._steps,
            fused=True,
            amsgrad=False,
            beta1=_BETAS[0],
            beta2=_BETAS[1],
            lr=self.lr,
            weight_decay=0.0,
            eps=_EPS,
            maximize=False,
        )

    def reset(self, slot: int, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Give ``slot`` fresh probes: initial weights, zero moments, step 0."""
        self.weight[slot].copy_(weight)
        self.bias[slot].copy_(bias)
        for state in (*self.exp_avg, *self.exp_avg_sq):
            state[slot].zero_()
        self.steps[:, slot] = 0

    def freeze(self, stopped: torch.Tensor, num_classes: int) -> None:
        """Clear the first moment of the probes where ``stopped`` [C, S] is True."""
        keep = (~stopped).to(self.weight.dtype).repeat_interleave(num_classes, dim=1)  # [C, S*K]
        for slot in torch.nonzero(stopped.any(dim=1)).flatten().tolist():
            for moment in self.exp_avg:
                moment[slot].mul_(keep[slot])

    def keep(self, slots: list[int]) -> None:
        """Compaction: keep only ``slots`` (weights, moments and step counts), in that order."""
        rows = torch.tensor(slots, device=self.weight.device)
        for tensors in (self.params, self.exp_avg, self.exp_avg_sq):
            tensors[:] = [t[rows] for t in tensors]
        self.steps = self.steps[:, rows]
        self._views()


@dataclass
class _Group:
    """The feature sets of one dimension and what every worker training them shares."""

    feature_sets: Sequence[np.ndarray]
    pending: Iterator[int]  # indices of the feature sets no worker has taken yet
    weight0: torch.Tensor  # [d, S*K]: seed s's initial weights in columns s*K .. s*K+K-1
    bias0: torch.Tensor  # [1, S*K]
    labels: torch.Tensor
    parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    num_classes: int
    config: ProbeConfig
    results: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # f1, accuracy, epochs, val_loss
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int | None:
        with self.lock:
            return next(self.pending, None)


def _train_worker(group: _Group, capacity: int) -> None:
    """Train cells of ``group`` in ``capacity`` slots until none is left.

    Every epoch is one pass of stacked mini-batch steps over all slots (each slot at its own
    epoch of the shared batch order); after it, per-probe early stopping, and a slot whose
    probes have all stopped is tested and takes the next cell. When no cell is left, finished
    slots are dropped from the stacked tensors.
    """
    config, k, seeds = group.config, group.num_classes, group.config.seeds
    train_idx, val_idx, test_idx = group.parts
    device, dim, num_train = group.weight0.device, group.weight0.shape[0], len(train_idx)
    y_val, y_test = group.labels[val_idx], group.labels[test_idx]
    targets = F.one_hot(group.labels[train_idx], k).float()  # [n_train, K]
    x_parts = [torch.empty(capacity, len(p), dim, device=device) for p in group.parts]
    optimizer = _SlotAdam(
        torch.empty(capacity, dim, seeds * k, device=device),
        torch.empty(capacity, 1, seeds * k, device=device),
        lr=config.lr,
    )
    stopping = _EarlyStopping(
        (capacity, seeds), patience=config.patience, min_delta=config.min_delta, device=device
    )
    active = torch.zeros(capacity, seeds, dtype=torch.bool, device=device)
    last_loss = torch.full((capacity, seeds), math.nan, dtype=torch.float64, device=device)
    cells, epochs = [-1] * capacity, np.zeros(capacity, dtype=np.int64)
    stop_epoch = np.zeros((capacity, seeds), dtype=np.int64)
    orders: dict[int, np.ndarray] = {}

    while True:
        for slot in range(len(cells)):
            index = group.take() if cells[slot] < 0 else None
            if index is None:
                continue
            raw = torch.as_tensor(
                np.asarray(group.feature_sets[index], dtype=np.float32), device=device
            )
            features = standardize_by_train(raw, train_idx)
            for x, part in zip(x_parts, group.parts, strict=True):
                torch.index_select(features, 0, part, out=x[slot])
            optimizer.reset(slot, group.weight0, group.bias0)
            stopping.reset(slot)
            active[slot], last_loss[slot], epochs[slot], stop_epoch[slot] = True, math.nan, 0, 0
            cells[slot] = index
        live = [slot for slot, cell in enumerate(cells) if cell >= 0]
        if not live:
            return
        if len(live) < len(cells):  # nothing left to take: drop the finished slots
            rows = torch.tensor(live, device=device)
            x_parts = [x[rows] for x in x_parts]
            active, last_loss = active[rows], last_loss[rows]
            optimizer.keep(live)
            stopping.keep(rows)
            cells, epochs, stop_epoch = [cells[s] for s in live], epochs[live], stop_epoch[live]
        size = len(cells)
        x_train, x_val, x_test = x_parts

        epochs += 1
        for epoch in set(epochs.tolist()) - orders.keys():
            orders[epoch] = batch_order(num_train, epoch, config.split_seed)
        order = torch.as_tensor(
            np.stack([orders[e] for e in epochs]), device=device
        )  # [C, n_train]
        flat = order + torch.arange(size, device=device).unsqueeze(1) * num_train
        rows_train = x_train.view(size * num_train, dim)
        # (softmax - one-hot) times this is the gradient: 1/B for training probes, 0 for stopped.
        weights = {
            b: active.to(x_train.dtype).view(size, 1, seeds, 1) / b
            for b in {config.batch_size, num_train % config.batch_size} - {0}
        }
        for start in range(0, num_train, config.batch_size):
            local = order[:, start : start + config.batch_size]  # [C, B]
            batch = local.shape[1]
            x_batch = rows_train.index_select(
                0, flat[:, start : start + config.batch_size].reshape(-1)
            )
            x_batch = x_batch.view(size, batch, dim)
            logits = torch.baddbmm(optimizer.bias, x_batch, optimizer.weight).view(
                size, batch, seeds, k
            )
            # d(mean cross-entropy)/d(logits) = (softmax - one-hot) / B; zero for stopped probes.
            # (A hand-written softmax: torch.softmax is several times slower over K = 6 classes.)
            delta = logits.sub(logits.amax(dim=-1, keepdim=True)).exp_()
            delta.div_(delta.sum(dim=-1, keepdim=True))
            delta.sub_(targets[local].view(size, batch, 1, k)).mul_(weights[batch])
            delta = delta.view(size, batch, seeds * k)
            optimizer.step(
                torch.bmm(x_batch.transpose(1, 2), delta), delta.sum(dim=1, keepdim=True)
            )

        val_logits = torch.baddbmm(optimizer.bias, x_val, optimizer.weight).view(size, -1, seeds, k)
        picked = val_logits.log_softmax(-1).gather(
            -1, y_val.view(1, -1, 1, 1).expand(size, -1, seeds, 1)
        )
        val_loss = -picked.squeeze(-1).mean(dim=1)  # [C, S]
        stopped = stopping.update(val_loss, active)
        stopped |= active & torch.as_tensor(epochs >= config.max_epochs, device=device).unsqueeze(1)
        if not bool(stopped.any()):
            continue
        last_loss = torch.where(stopped, val_loss.double(), last_loss)
        slots, seed_idx = np.nonzero(stopped.cpu().numpy())
        stop_epoch[slots, seed_idx] = epochs[slots]
        optimizer.freeze(stopped, k)
        active &= ~stopped
        finished = torch.nonzero(~active.any(dim=1)).flatten()
        if len(finished) == 0:
            continue
        test_logits = torch.baddbmm(
            optimizer.bias[finished], x_test[finished], optimizer.weight[finished]
        )
        predicted = (
            test_logits.view(len(finished), -1, seeds, k).argmax(-1).transpose(1, 2)
        )  # [c, S, n]
        f1, accuracy = (m.cpu().numpy() for m in _metrics(predicted, y_test, k))
        losses = last_loss[finished].cpu().numpy()
        for j, slot in enumerate(finished.tolist()):
            index = cells[slot]
            outcome = (f1[j], accuracy[j], stop_epoch[slot], losses[j])
            for array, values in zip(group.results, outcome, strict=True):
                array[index] = values
            cells[slot] = -1


@contextmanager
def _single_threaded_ops() -> Iterator[None]:
    """Run torch ops on one thread each while workers run on parallel Python threads.

    Each op of a worker is far too small to gain from an OpenMP team, and teams of busy-waiting
    threads collapse when cores are shared; one worker per core scales instead. torch's thread
    count is process-wide, so it is restored on exit.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _capacity(dim: int, columns: int, num_clips: int, device: torch.device) -> int:
    """Cells a worker trains at once: on the CPU, as many as keep their state in cache."""
    if device.type == "cuda":
        return max(1, _CUDA_FEATURE_BYTES // (4 * num_clips * dim))
    return max(1, _CPU_STATE_BYTES // (4 * 4 * dim * columns))  # weights, 2 moments, gradient


def train_probes(
    feature_sets: Sequence[np.ndarray],
    y: np.ndarray,
    split: Split,
    *,
    config: ProbeConfig,
    cells_per_worker: int | None = None,
) -> ProbeResults:
    """Train and test ``config.seeds`` probes on every feature set, all at once.

    Feature sets of the same dimension d are stacked into tensors [C, n, d] and their probes'
    weights into [C, d, seeds*K]: each mini-batch is one batched matmul forward and one
    backward for every probe, and one Adam step on the stacked weights. Early stopping is per
    probe, by masks (a stopped probe's gradient is masked to zero and its Adam moment cleared,
    so its weights stay exactly those of its stop epoch). A cell whose probes have all stopped
    is tested and its slot refilled with the next feature set; when none is left, finished
    cells are dropped from the stacked tensors. On the CPU, one worker per torch thread trains
    its own stack of cells (ops single-threaded, stacks small enough to stay in cache); on
    CUDA, one stack holds every cell that fits. The results do not depend on either.

    Args:
        feature_sets: arrays n x d_i, row j of each for clip j.
        y: n class codes 0..K-1.
        split: ``(train_idx, val_idx, test_idx)`` from ``stratified_split``.
        config: the training rules (seeds, batch size, lr, early stopping, device).
        cells_per_worker: cells a worker stacks (None: chosen for the device and dimension).

    Returns:
        ``ProbeResults`` with arrays [len(feature_sets), config.seeds].

    Raises:
        InvalidInputError: a feature set with another row count than ``y``, NaN, a bad split.
        InvalidConfigError: an unavailable device.
    """
    codes, num_classes = _check_inputs(feature_sets, y, split)
    device = resolve_device(config.device)
    seeds = config.seeds
    shape = (len(feature_sets), seeds)
    results = (
        np.full(shape, np.nan),
        np.full(shape, np.nan),
        np.zeros(shape, dtype=np.int64),
        np.full(shape, np.nan),
    )
    labels = torch.as_tensor(codes, device=device)
    parts = tuple(torch.as_tensor(np.asarray(p), dtype=torch.int64, device=device) for p in split)
    by_dim: dict[int, list[int]] = defaultdict(list)
    for i, x in enumerate(feature_sets):
        by_dim[np.asarray(x).shape[1]].append(i)

    threads = torch.get_num_threads() if device.type == "cpu" else 1
    with _single_threaded_ops() if threads > 1 else nullcontext():
        for dim, members in by_dim.items():
            inits = [init_weights(dim, num_classes, s) for s in range(seeds)]
            group = _Group(
                feature_sets=feature_sets,
                pending=iter(members),
                weight0=torch.cat([w.T for w, _ in inits], dim=1).to(device),
                bias0=torch.cat([b for _, b in inits]).unsqueeze(0).to(device),
                labels=labels,
                parts=parts,  # type: ignore[arg-type]
                num_classes=num_classes,
                config=config,
                results=results,
            )
            workers = min(threads, len(members))
            capacity = cells_per_worker or _capacity(dim, seeds * num_classes, len(codes), device)
            capacity = min(capacity, -(-len(members) // workers))
            if workers == 1:
                _train_worker(group, capacity)
                continue
            with ThreadPoolExecutor(workers, thread_name_prefix="probes") as pool:
                for future in [pool.submit(_train_worker, group, capacity) for _ in range(workers)]:
                    future.result()
    f1, accuracy, epochs, val_loss = results
    return ProbeResults(f1_macro=f1, accuracy=accuracy, epochs=epochs, val_loss=val_loss)
