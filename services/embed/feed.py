"""The embedding feed path: clips to device tensors with as little host work as possible.

Per batch the host only copies each clip's samples into a reused (pinned, on CUDA) buffer and
writes one length per clip; everything else happens on the device: the padding mask is built
from the lengths, and per-clip standardisation (``do_normalize``) runs there as a few batched
kernels (on a CPU-only run, where the host is the device, it is done per clip while copying,
when the clip is in cache). On CUDA a background thread fills batch k+1's host buffer while batch k computes,
with two buffers that take turns; a buffer is refilled only after its copy to the device has
finished (a CUDA event). On the CPU there is nothing to overlap with: by default batches are
prepared in turn, into fresh buffers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from serlens.shared.models import fill_host, normalize_on_device


@dataclass
class DeviceBatch:
    """One forward pass's input on the device.

    Attributes:
        indices: positions of its clips in the caller's list.
        values: (clips, longest) float32, standardised per clip if asked, zero past each clip.
        lengths: (clips,) int64, real samples of each clip.
        padded: whether the clips differ in length (otherwise no mask is needed).
    """

    indices: list[int]
    values: torch.Tensor
    lengths: torch.Tensor
    padded: bool


class _Slot:
    """A reusable host buffer (pinned on CUDA) and the event marking the end of its last copy."""

    def __init__(self, *, pin: bool) -> None:
        self.pin = pin
        self.buffer = torch.empty(0, dtype=torch.float32)
        self.lengths = torch.empty(0, dtype=torch.int64)
        self.copied: torch.cuda.Event | None = None

    def views(self, clips: int, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(clips, longest) samples and (clips,) lengths, free to overwrite."""
        if self.copied is not None:
            self.copied.synchronize()  # the device has finished reading the previous batch
        if self.buffer.numel() < clips * longest:
            self.buffer = torch.empty(clips * longest, dtype=torch.float32, pin_memory=self.pin)
        if self.lengths.numel() < clips:
            self.lengths = torch.empty(max(clips, 256), dtype=torch.int64, pin_memory=self.pin)
        return self.buffer[: clips * longest].view(clips, longest), self.lengths[:clips]


class Feed:
    """Turns planned batches of clips into ``DeviceBatch`` objects, overlapping on CUDA.

    Args:
        device: where the model runs (``cpu`` or ``cuda``).
        do_normalize: standardise each clip over its own samples (the encoder's setting).
        overlap: prepare the next batch in a background thread into two reused buffers
            (default: on CUDA only). On the CPU it is correct too, since a batch's compute has
            finished when the next is asked for, but it only competes with the compute threads.

    One feed serves one caller at a time (a lock guards the reused buffers).
    """

    def __init__(self, *, device: str | torch.device, do_normalize: bool, overlap: bool | None = None) -> None:
        self.device = torch.device(device)
        self.do_normalize = do_normalize
        cuda = self.device.type == "cuda"
        self.overlap = cuda if overlap is None else overlap
        # On the CPU the device is the host: standardise while copying, a clip at a time.
        self._normalize_on_host = do_normalize and not cuda
        self._slots = [_Slot(pin=cuda), _Slot(pin=cuda)] if self.overlap else []
        self._lock = threading.Lock()

    def batches(self, signals: Sequence[np.ndarray], plan: Sequence[list[int]]) -> Iterator[DeviceBatch]:
        """Yield each planned batch on the device, in plan order.

        Args:
            signals: float32 mono clips.
            plan: lists of indices into ``signals`` (e.g. from ``core.plan_batches``).
        """
        with self._lock:
            if not self.overlap:
                for indices in plan:
                    yield self._to_device(indices, *self._host([signals[i] for i in indices], None))
                return
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-feed") as pool:
                pending: Future | None = None
                for k, indices in enumerate(plan):
                    if pending is None:
                        pending = pool.submit(self._host, [signals[i] for i in indices], self._slots[k % 2])
                    values, lengths = pending.result()
                    pending = None
                    if k + 1 < len(plan):  # fill the other buffer while this batch computes
                        chosen = [signals[i] for i in plan[k + 1]]
                        pending = pool.submit(self._host, chosen, self._slots[(k + 1) % 2])
                    yield self._to_device(indices, values, lengths, slot=self._slots[k % 2])

    def _host(self, chosen: list[np.ndarray], slot: _Slot | None) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(s) for s in chosen)
        normalize = self._normalize_on_host
        if slot is None:
            values = torch.empty(len(chosen), longest)
            return values, torch.from_numpy(fill_host(chosen, values.numpy(), normalize=normalize))
        values, lengths = slot.views(len(chosen), longest)
        lengths.numpy()[:] = fill_host(chosen, values.numpy(), normalize=normalize)
        return values, lengths

    def _to_device(self, indices: list[int], values: torch.Tensor, lengths: torch.Tensor,
                   slot: _Slot | None = None) -> DeviceBatch:
        padded = bool(lengths.min() != lengths.max())  # host tensors: no device sync
        # From pinned memory both copies are asynchronous: the host goes on to queue kernels.
        values_d = values.to(self.device, non_blocking=True)
        lengths_d = lengths.to(self.device, non_blocking=True)
        if slot is not None and slot.pin:
            slot.copied = torch.cuda.Event()
            slot.copied.record()
        if self.do_normalize and not self._normalize_on_host:
            values_d = normalize_on_device(values_d, lengths_d)
        return DeviceBatch(indices=list(indices), values=values_d, lengths=lengths_d, padded=padded)
