"""Adam on stacked probe parameters: one step count per slot, per-probe freezing.

Every parameter is a tensor [C, S, ...]: slot c (a cell in training), seed s. Each slot's
part is its own tensor in the update (a view), with its own step count, so a slot can take a
new cell while the others go on. The update is PyTorch's own fused Adam kernel (what
``torch.optim.adam.adam(fused=True)`` runs: one pass over every slot; on the CPU called directly,
see ``SlotAdam.step``), with ``torch.optim.Adam``'s defaults, as in ``serlens.probe.naive``.

A probe is frozen by clearing its first moment while its gradient is masked to zero from then
on: Adam's update ``m / (sqrt(v) + eps)`` is then exactly 0, so its parameters stay bit for bit
those of its stop epoch.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam as adam_update

#: ``torch.optim.Adam``'s defaults, which the one-at-a-time reference uses.
BETAS = (0.9, 0.999)
EPS = 1e-8


class SlotAdam:
    """Adam over stacked parameters [C, S, ...].

    Args:
        params: the stacked parameters (updated in place).
        lr: learning rate.
    """

    def __init__(self, params: list[torch.Tensor], *, lr: float) -> None:
        self.lr = lr
        self.params = params
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(len(params), params[0].shape[0], dtype=torch.float32,
                                 device=params[0].device)
        self._views()

    def _views(self) -> None:
        def per_slot(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            return [view for t in tensors for view in t.unbind(0)]

        self._slots = [per_slot(t) for t in (self.params, self.exp_avg, self.exp_avg_sq)]
        self._steps = [view for row in self.steps for view in row.unbind(0)]

    def step(self, grads: list[torch.Tensor]) -> None:
        """One Adam step of every slot with the stacked gradients (same shapes as params)."""
        params, exp_avgs, exp_avg_sqs = self._slots
        flat = [view for g in grads for view in g.unbind(0)]
        if params[0].device.type != "cpu":
            adam_update(params, flat, exp_avgs, exp_avg_sqs, [], self._steps, fused=True,
                        amsgrad=False, beta1=BETAS[0], beta2=BETAS[1], lr=self.lr,
                        weight_decay=0.0, eps=EPS, maximize=False)
            return
        # What ``adam(fused=True)`` runs, without its per-call grouping of the tensors by device
        # and dtype (here all on one device, one dtype): that grouping cost more than the update.
        self.steps.add_(1)  # every slot's step count (``_steps`` are views of it)
        torch._fused_adam_(
            params, flat, exp_avgs, exp_avg_sqs, [], self._steps, amsgrad=False, lr=self.lr,
            beta1=BETAS[0], beta2=BETAS[1], weight_decay=0.0, eps=EPS, maximize=False,
            grad_scale=None, found_inf=None,
        )

    def reset(self, slot: int, initial: list[torch.Tensor]) -> None:
        """Give ``slot`` fresh probes: initial parameters [S, ...], zero moments, step 0."""
        for param, value in zip(self.params, initial, strict=True):
            param[slot].copy_(value)
        for state in (*self.exp_avg, *self.exp_avg_sq):
            state[slot].zero_()
        self.steps[:, slot] = 0

    def freeze(self, stopped: torch.Tensor) -> None:
        """Clear the first moment of the probes where ``stopped`` [C, S] is True."""
        keep = ~stopped
        for moment in self.exp_avg:
            moment.mul_(keep.view(*keep.shape, *([1] * (moment.dim() - 2))))

    def keep(self, rows: torch.Tensor) -> None:
        """Compaction: keep only slots ``rows`` (parameters, moments and step counts), in order."""
        for tensors in (self.params, self.exp_avg, self.exp_avg_sq):
            tensors[:] = [t[rows] for t in tensors]
        self.steps = self.steps[:, rows]
        self._views()
