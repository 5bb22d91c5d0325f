"""``ProbeService``: layer-wise linear probes for SER on every cell of a run, and on eGeMAPS.

A plain class: no Ray, no I/O. The caller reads the cells (mean-pooled embeddings of subset 3
per checkpoint and layer; the eGeMAPS features of the same clips) and their labels, and writes
the rows to the ``probes`` table, adding ``train_key`` and lineage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from serlens.probe import batched, core
from serlens.probe.config import ProbeConfig
from serlens.shared.errors import InvalidInputError
from serlens.shared.schema import EMOTIONS

#: A cell key: ("embeddings", checkpoint_step, layer) or ("egemaps", None, None).
CellKey = tuple[str, int | None, int | None]

FEATURE_KINDS = ("egemaps", "embeddings")


def _valid_key(key: object) -> bool:
    if not isinstance(key, tuple) or len(key) != 3:
        return False
    kind, step, layer = key
    if kind == "egemaps":
        return step is None and layer is None
    return kind == "embeddings" and isinstance(step, Integral) and isinstance(layer, Integral)


def _name(key: CellKey) -> str:
    kind, step, layer = key
    return kind if step is None and layer is None else f"{kind} (checkpoint {step}, layer {layer})"


def _sort_key(key: CellKey) -> tuple[int, int, int]:
    kind, step, layer = key
    return FEATURE_KINDS.index(kind), -1 if step is None else step, -1 if layer is None else layer


def class_codes(labels: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class codes 0..K-1 for string labels.

    Args:
        labels: one label per clip.

    Returns:
        ``(codes, classes)``: classes in ``serlens.shared.schema.EMOTIONS`` order when every label is
        an emotion code, otherwise sorted; ``codes[i]`` indexes ``classes``.

    Raises:
        InvalidInputError: fewer than two distinct labels.
    """
    present = sorted(set(labels))
    classes = (
        tuple(e for e in EMOTIONS if e in present)
        if set(present) <= set(EMOTIONS)
        else tuple(present)
    )
    if len(classes) < 2:
        raise InvalidInputError(
            [("labels", f"classes {list(classes)}; probes need at least two")], source="probe input"
        )
    index = {label: i for i, label in enumerate(classes)}
    return np.array([index[label] for label in labels], dtype=np.int64), classes


class ProbeService:
    """Linear probes (``config.seeds`` per feature set) on one shared stratified split.

    Args:
        config: the validated settings.

    Raises:
        InvalidConfigError: ``device='cuda'`` where there is no CUDA device.
    """

    def __init__(self, *, config: ProbeConfig) -> None:
        self.config = config
        self.device = core.resolve_device(config.device)

    def process(
        self, cells: Mapping[CellKey, np.ndarray], labels: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Train and test the probes of every cell.

        Args:
            cells: ``("embeddings", checkpoint_step, layer)`` or ``("egemaps", None, None)``
                -> n x d features; row i of every cell is clip i.
            labels: the n clips' class labels (e.g. ``EMOTIONS`` codes).

        Returns:
            One row per (cell, seed) with the ``probes`` table's columns other than
            ``train_key`` and lineage: features, checkpoint_step, layer, seed, f1_macro,
            accuracy, epochs, val_loss; eGeMAPS first, then by checkpoint and layer.

        Raises:
            InvalidInputError: no cells, an unknown key, a cell that is not 2-D, has another
                row count than ``labels`` or holds NaN/inf (each is named), fewer than two
                classes, or a class with too few clips for the stratified split.
        """
        problems: list[tuple[str, str]] = []
        if not cells:
            problems.append(("cells", "none given"))
        for key in cells:
            if not _valid_key(key):
                problems.append(
                    (repr(key), "expected ('embeddings', step, layer) or ('egemaps', None, None)")
                )
        if problems:
            raise InvalidInputError(problems, source="probe input")
        keys = sorted(cells, key=_sort_key)
        for key in keys:
            array = np.asarray(cells[key])
            if array.ndim != 2 or array.shape[1] == 0:
                problems.append((_name(key), f"shape {array.shape}; expected (clips, features)"))
            elif array.shape[0] != len(labels):
                problems.append(
                    (_name(key), f"{array.shape[0]} rows; expected {len(labels)}, one per label")
                )
            elif not np.isfinite(array).all():
                bad = int(np.count_nonzero(~np.isfinite(array).all(axis=1)))
                problems.append((_name(key), f"{bad} row(s) hold NaN or infinite values"))
        if problems:
            raise InvalidInputError(problems, source="probe input")

        codes, _ = class_codes(labels)
        split = core.stratified_split(
            np.asarray(list(labels)), self.config.split, self.config.split_seed
        )
        results = batched.train_probes([cells[k] for k in keys], codes, split, config=self.config)
        return [
            {
                "features": kind,
                "checkpoint_step": step,
                "layer": layer,
                "seed": seed,
                "f1_macro": float(results.f1_macro[i, seed]),
                "accuracy": float(results.accuracy[i, seed]),
                "epochs": int(results.epochs[i, seed]),
                "val_loss": float(results.val_loss[i, seed]),
            }
            for i, (kind, step, layer) in enumerate(keys)
            for seed in range(self.config.seeds)
        ]
