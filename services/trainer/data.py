"""The trainer's data: clips, their checks, the epoch plan, collation, and the feed to the device.

A micro-batch travels as ``(values, lengths, targets)``: float32 samples right-padded with
zeros, each clip's length in samples, and class indices. The per-sample attention mask the
encoder wants is built on the device from the lengths (one comparison), never on the host as
an int64 array; on CUDA the samples go through pinned host buffers that are reused from batch
to batch instead of allocated afresh.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from serlens.shared.audio import TARGET_SAMPLING_RATE, read_wav
from serlens.shared.errors import InvalidConfigError, InvalidManifestError
from serlens.shared.models import fill_host, normalize_on_device
from serlens.trainer import core
from serlens.trainer.config import TrainConfig


@dataclass(frozen=True)
class TrainClip:
    """One training or validation clip.

    Attributes:
        clip_id: unique within its set.
        path: a 16 kHz mono WAV, already loudness-normalised.
        label: class name; one of the ``labels`` given to ``fit``.
    """

    clip_id: str
    path: str
    label: str


def check_clips(clips: Sequence[TrainClip], labels: Sequence[str], name: str) -> list[int]:
    """Check a clip set, naming every problem at once; return each clip's length in samples.

    Raises:
        InvalidConfigError: when the set is empty.
        InvalidManifestError: naming every clip with an unknown label, a duplicate id, or a
            file that is missing, unreadable, not mono or not at 16 kHz.
    """
    if not clips:
        raise InvalidConfigError(f"the {name} is empty: fine-tuning needs at least one clip")
    known, seen = set(labels), set()
    problems: list[tuple[str, str]] = []
    lengths: list[int] = []
    for clip in clips:
        culprit = f"{clip.clip_id} ({clip.path})"
        if clip.label not in known:
            problems.append((culprit, f"label {clip.label!r} is not one of {list(labels)}"))
        if clip.clip_id in seen:
            problems.append((culprit, "duplicate clip_id"))
        seen.add(clip.clip_id)
        try:
            info = sf.info(clip.path)
        except (OSError, RuntimeError) as err:
            missing = not Path(clip.path).is_file()
            problems.append((culprit, "file not found" if missing else f"unreadable audio: {err}"))
            lengths.append(0)
            continue
        if info.samplerate != TARGET_SAMPLING_RATE or info.channels != 1:
            problems.append((culprit, f"{info.samplerate} Hz, {info.channels} channel(s); expected "
                                      f"{TARGET_SAMPLING_RATE} Hz mono (normalise it first)"))
        lengths.append(int(info.frames))
    if problems:
        raise InvalidManifestError(problems, source=name)
    return lengths


def fingerprint(clips: Sequence[TrainClip]) -> str:
    """Hash a clip set (ids, files and labels, in order) for resume checks."""
    payload = json.dumps([[c.clip_id, c.path, c.label] for c in clips])
    return hashlib.sha256(payload.encode()).hexdigest()


def manifest_datasets(train: Sequence[TrainClip], validation: Sequence[TrainClip]) -> dict[str, Any]:
    """The training and validation manifests as MLflow datasets (digests computed here, nothing logged)."""
    from serlens.shared.logged_models import manifest_datasets as as_datasets

    rows = {context: [{"clip_id": c.clip_id, "path": c.path, "label": c.label} for c in clips]
            for context, clips in (("training", train), ("validation", validation))}
    return as_datasets(rows, source=Path(train[0].path).resolve().parent.as_uri())


@dataclass(frozen=True)
class TrainPlan:
    """The checked data of one fit and how many optimizer steps it takes.

    Attributes:
        labels: class names, in class-index order.
        train: training clips; ``train_lengths`` their lengths in samples.
        validation: validation clips; ``val_lengths`` their lengths in samples.
        steps_per_epoch: optimizer steps per pass over ``train``.
        max_steps: optimizer steps the fit takes unless early stopping ends it first.
    """

    labels: list[str]
    train: Sequence[TrainClip]
    train_lengths: list[int]
    validation: Sequence[TrainClip]
    val_lengths: list[int]
    steps_per_epoch: int
    max_steps: int

    @classmethod
    def build(cls, config: TrainConfig, train: Sequence[TrainClip], validation: Sequence[TrainClip],
              labels: Sequence[str]) -> TrainPlan:
        """Check labels and both clip sets (every problem named at once) and count the steps.

        Raises:
            InvalidConfigError: on empty or repeated labels, or an empty set.
            InvalidManifestError: on clips with unknown labels, or missing or unusable files.
        """
        labels = list(labels)
        if not labels or len(set(labels)) != len(labels):
            raise InvalidConfigError(f"labels must be distinct and non-empty, got {labels}")
        train_lengths = check_clips(train, labels, "train set")
        val_lengths = check_clips(validation, labels, "validation set")
        per_epoch = core.optimizer_steps_per_epoch(len(train), config.batch_size, config.grad_accum_steps)
        max_steps = config.max_epochs * per_epoch
        if config.max_steps is not None:
            max_steps = min(max_steps, config.max_steps)
        return cls(labels, train, train_lengths, validation, val_lengths, per_epoch, max_steps)

    def steps_from(self, step: int, config: TrainConfig) -> list[list[list[int]]]:
        """The rest of the epoch that holds optimizer step ``step + 1``, as micro-batches per step.

        Each epoch's order is a function of (seed, epoch), so a resumed fit skips the steps
        already done and sees the same batches as an uninterrupted one.
        """
        steps = core.epoch_steps(self.train_lengths, config.effective_batch_size, seed=config.seed,
                                 epoch=step // self.steps_per_epoch)
        return [core.micro_batches(clips, config.batch_size, self.train_lengths,
                                   bucket_by_length=config.length_bucketing)
                for clips in steps[step % self.steps_per_epoch:]]


class ClipDataset(torch.utils.data.Dataset):
    """Reads one clip's samples and class index (standardised later: ``collate`` or ``DeviceFeeder``)."""

    def __init__(self, clips: Sequence[TrainClip], labels: Sequence[str]) -> None:
        self.paths = [c.path for c in clips]
        self.targets = [list(labels).index(c.label) for c in clips]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """The clip's samples as read (float32; ``collate`` standardises them) and its class index."""
        signal, _ = read_wav(self.paths[index])
        return np.asarray(signal, dtype=np.float32), self.targets[index]


def collate(items: list[tuple[np.ndarray, int]], *,
            normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad clips with zeros: ``(values (B, T) float32, lengths (B,) int64, targets (B,) int64)``.

    With ``normalize``, each clip is standardised straight into its row (``fill_host``: the same
    values as ``standardize``, without a copy per clip).
    """
    values = torch.empty((len(items), max(len(signal) for signal, _ in items)), dtype=torch.float32)
    lengths = fill_host([signal for signal, _ in items], values.numpy(), normalize=normalize)
    return values, torch.from_numpy(lengths), torch.tensor([target for _, target in items])


def loader(dataset: ClipDataset, batches: list[list[int]], *, num_workers: int, seed: int,
           normalize: bool = False) -> torch.utils.data.DataLoader:
    """A loader over fixed micro-batches of ``dataset``, standardised on the host if ``normalize``.

    Its own generator keeps it from drawing on the global RNG, which would make a resumed
    fit's dropout and masks differ from an uninterrupted one's.
    """
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=functools.partial(collate, normalize=normalize),
        num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
    )


class DeviceFeeder:
    """Moves collated micro-batches to the device, standardises them there, and builds their masks.

    On CUDA each batch is staged in one of two pinned host buffers that are reused (grown
    when a longer batch comes), and copied without blocking; a buffer is refilled only after
    the copy that last read it has finished; standardisation (``normalize_on_device``) runs
    on the GPU. Elsewhere the tensors are used as they are, and the loader standardises on
    the host (``host_normalizes``: ``collate``, bit-identical to ``standardize``).

    Args:
        device: where the model runs.
        normalize: the encoder wants each clip standardised (its ``do_normalize``).
    """

    def __init__(self, device: torch.device, *, normalize: bool = False) -> None:
        self.device = device
        self.on_device = normalize and device.type == "cuda"
        #: Whether the loader must standardise (``loader(normalize=...)``): off the GPU.
        self.host_normalizes = normalize and not self.on_device
        self._pinned: list[torch.Tensor | None] = [None, None]
        self._copied: list[Any] = [None, None]
        self._turn = 0

    def __call__(self, values: torch.Tensor, lengths: torch.Tensor,
                 targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(values, attention_mask, targets)`` on the device; the mask is bool (B, T)."""
        if self.device.type == "cuda":
            values = self._stage(values)
            lengths = lengths.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
        if self.on_device:
            values = normalize_on_device(values, lengths)
        mask = torch.arange(values.shape[1], device=self.device)[None, :] < lengths[:, None]
        return values, mask, targets

    def _stage(self, values: torch.Tensor) -> torch.Tensor:
        turn, self._turn = self._turn, 1 - self._turn
        if self._copied[turn] is not None:
            self._copied[turn].synchronize()
        buffer = self._pinned[turn]
        if buffer is None or buffer.numel() < values.numel():
            buffer = self._pinned[turn] = torch.empty(values.numel(), dtype=values.dtype, pin_memory=True)
        staged = buffer[: values.numel()].view(values.shape)
        staged.copy_(values)
        on_device = staged.to(self.device, non_blocking=True)
        self._copied[turn] = torch.cuda.Event()
        self._copied[turn].record()
        return on_device


def batches_on_device(feeder: DeviceFeeder, loader_: torch.utils.data.DataLoader
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each batch of ``loader_`` as fed to the device by ``feeder``."""
    for values, lengths, targets in loader_:
        yield feeder(values, lengths, targets)
