"""``ProbeService``: what every cell of a run decodes, how sure, and where.

A plain class: no Ray, no I/O. The caller reads the cells (mean-pooled embeddings of the
analysis clips per checkpoint and layer; the eGeMAPS features of the same clips), the labels
and speakers, and writes the returned rows to the ``probes``, ``probe_features``,
``probe_classes`` and ``probe_confusion`` tables, adding ``train_key`` and lineage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from serlens.probe import rows
from serlens.probe.config import ProbeConfig
from serlens.probe.folds import effective_folds, grouped_folds
from serlens.probe.protocols import control_labels, protocol_splits, run_protocol
from serlens.probe.ridge import ridge_probes
from serlens.shared.arrays import matrix_problem
from serlens.shared.errors import InvalidInputError
from serlens.shared.models import resolve_device
from serlens.shared.schema import EMOTIONS

#: A cell key: ("embeddings", checkpoint_step, layer) or ("egemaps", None, None).
CellKey = tuple[str, int | None, int | None]

FEATURE_KINDS = ("egemaps", "embeddings")
_SOURCE = "probe input"


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
            [("labels", f"classes {list(classes)}; probes need at least two")], source=_SOURCE
        )
    index = {label: i for i, label in enumerate(classes)}
    return np.array([index[label] for label in labels], dtype=np.int64), classes


def check_cells(cells: Mapping[CellKey, np.ndarray], num_clips: int) -> list[CellKey]:
    """The cell keys in table order, after checking every cell.

    Raises:
        InvalidInputError: no cells, an unknown key, a cell that is not 2-D, has another row
            count than the labels or holds NaN/inf (each is named).
    """
    problems: list[tuple[str, str]] = [] if cells else [("cells", "none given")]
    for key in cells:
        if not _valid_key(key):
            problems.append(
                (repr(key), "expected ('embeddings', step, layer) or ('egemaps', None, None)")
            )
    if problems:
        raise InvalidInputError(problems, source=_SOURCE)
    keys = sorted(cells, key=_sort_key)
    for key in keys:
        reason = matrix_problem(cells[key], num_rows=num_clips, rows_are="label")
        if reason is not None:
            problems.append((_name(key), reason))
    if problems:
        raise InvalidInputError(problems, source=_SOURCE)
    return keys


class ProbeService:
    """Classification probes under one protocol, per-feature ridge probes, per-class results.

    Args:
        config: the validated settings.

    Raises:
        InvalidConfigError: ``device='cuda'`` where there is no CUDA device.
    """

    def __init__(self, *, config: ProbeConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)

    def process(
        self,
        cells: Mapping[CellKey, np.ndarray],
        labels: Sequence[str],
        *,
        speakers: Sequence[str] | None = None,
        targets: np.ndarray | None = None,
        target_names: Sequence[str] | None = None,
        classifier: np.ndarray | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Train and score every probe.

        Args:
            cells: ``("embeddings", checkpoint_step, layer)`` or ``("egemaps", None, None)``
                -> n x d features; row i of every cell is clip i.
            labels: the n clips' class labels (e.g. ``EMOTIONS`` codes).
            speakers: the n clips' speaker ids (needed by ``grouped_cv``, the intervals and
                the ridge probes).
            targets: n x T regression targets of the ridge probes (the eGeMAPS features).
            target_names: the T targets' names (eGeMAPS names verbatim).
            classifier: the fine-tuned classifier's predicted class codes on the n clips.

        Returns:
            Rows per table (``probes``, ``probe_features``, ``probe_classes``,
            ``probe_confusion``), each without ``train_key`` and lineage.

        Raises:
            InvalidInputError: bad cells (each named), fewer than two classes, a class too
                small for the split, ``grouped_cv`` or ridge probes without speakers.
        """
        keys = check_cells(cells, len(labels))
        codes, classes = class_codes(labels)
        spk = None if speakers is None else np.asarray(list(speakers))
        splits = protocol_splits(self.config, np.asarray(list(labels)), spk)
        feature_sets = [cells[k] for k in keys]
        runs = [("linear", "emotion", codes)]
        if self.config.mlp:
            control = control_labels(codes, spk, self.config.control_seed)
            runs += [("mlp", "emotion", codes), ("mlp", "control", control)]
        out: dict[str, list[dict[str, Any]]] = {
            "probes": [], "probe_features": [], "probe_classes": [], "probe_confusion": []
        }
        context = rows.Context(keys, classes, spk, self.config)
        for head, task, task_codes in runs:
            result = run_protocol(feature_sets, task_codes, splits, config=self.config, head=head)
            out["probes"] += rows.probe_rows(context, result, task_codes, head=head, task=task)
            if (head, task) == ("linear", "emotion"):
                out["probe_classes"], out["probe_confusion"] = rows.class_rows(
                    context, result, codes, classifier
                )
        if self.config.ridge and targets is not None:
            out["probe_features"] = self._ridge_rows(cells, keys, spk, targets, target_names)
        return out

    def _ridge_rows(
        self,
        cells: Mapping[CellKey, np.ndarray],
        keys: list[CellKey],
        speakers: np.ndarray | None,
        targets: np.ndarray,
        target_names: Sequence[str] | None,
    ) -> list[dict[str, Any]]:
        if speakers is None:
            raise InvalidInputError(
                [("speakers", "the ridge probes need one speaker id per clip")], source=_SOURCE
            )
        names = list(target_names) if target_names is not None else [
            f"target_{j}" for j in range(np.asarray(targets).shape[1])
        ]
        num_folds = effective_folds(speakers, self.config.folds)
        folds = grouped_folds(speakers, num_folds, self.config.split_seed)
        embedding = [key for key in keys if key[0] == "embeddings"]
        results = ridge_probes([cells[key] for key in embedding], targets, folds,
                               alphas=self.config.ridge_alphas, control_seed=self.config.control_seed)
        out = []
        for key, result in zip(embedding, results, strict=True):
            out += rows.feature_rows(key, names, result, folds=num_folds)
        return out
