"""``CkaService``: CKA of every (checkpoint, layer) cell of a fine-tuning run with a reference.

A plain class: no Ray, no I/O. The caller reads the cells (mean-pooled embeddings of subset 3)
and the reference (eGeMAPS of the same clips, same row order) from the store and writes the
rows back to the ``cka`` table, adding ``train_key`` and lineage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from serlens.cka import core
from serlens.cka.config import CkaConfig
from serlens.shared.errors import InvalidInputError


class _Mapped(Sequence[np.ndarray]):
    """A lazy ``[func(a) for a in arrays]``: one transformed array alive at a time."""

    def __init__(
        self, func: Callable[[np.ndarray], np.ndarray], arrays: Sequence[np.ndarray]
    ) -> None:
        self._func = func
        self._arrays = arrays

    def __len__(self) -> int:
        return len(self._arrays)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self._func(a) for a in self._arrays[index]]
        return self._func(self._arrays[index])

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self._func(a) for a in self._arrays)


def _cell_name(key: tuple[int, int]) -> str:
    return f"checkpoint {key[0]}, layer {key[1]}"


class CkaService:
    """CKA (linear and/or debiased) of each (checkpoint, layer) cell with one reference.

    Args:
        config: the validated settings.
    """

    def __init__(self, *, config: CkaConfig) -> None:
        self.config = config

    def process(
        self,
        cells: Mapping[tuple[int, int], np.ndarray],
        reference: np.ndarray,
        *,
        reference_name: str = "egemaps",
    ) -> list[dict[str, Any]]:
        """CKA of every cell with the reference, one row per (cell, estimator).

        Args:
            cells: ``(checkpoint_step, layer) -> n x d`` mean-pooled embeddings; row i of every
                cell and of ``reference`` is the same clip.
            reference: n x q reference representation (the 88 eGeMAPS features).
            reference_name: what the rows' ``reference`` column says.

        Returns:
            Rows with the ``cka`` table's columns other than ``train_key`` and lineage:
            checkpoint_step, layer, reference, estimator, value, n_clips; ordered by
            checkpoint, layer, then estimator as configured.

        Raises:
            InvalidInputError: no cells; fewer than 4 clips; a cell or the reference that is
                not 2-D, has another row count than the reference, or holds NaN/inf (every
                offending cell is named).
        """
        if not cells:
            raise InvalidInputError(
                [("cells", "none given; expected (checkpoint, layer) arrays")], source="CKA input"
            )
        ref = core.check_representation(reference, name=f"reference {reference_name!r}")
        num_clips = ref.shape[0]
        if num_clips < core.MIN_CLIPS_DEBIASED:
            raise InvalidInputError(
                [
                    (
                        f"reference {reference_name!r}",
                        f"{num_clips} clip(s); CKA needs at least {core.MIN_CLIPS_DEBIASED}",
                    )
                ],
                source="CKA input",
            )
        keys = sorted(cells)
        problems: list[tuple[str, str]] = []
        for key in keys:
            try:
                core.check_representation(cells[key], name=_cell_name(key), num_clips=num_clips)
            except InvalidInputError as err:
                problems.extend(err.problems)
        if problems:
            raise InvalidInputError(problems, source="CKA input")

        arrays = [cells[key] for key in keys]
        if self.config.standardize:
            ref = core.standardize(ref)
            reps: Sequence[np.ndarray] = _Mapped(core.standardize, arrays)
        else:
            reps = arrays
        values = core.cka_against(reps, ref, self.config.estimators)
        return [
            {
                "checkpoint_step": int(step),
                "layer": int(layer),
                "reference": reference_name,
                "estimator": estimator,
                "value": float(values[i, j]),
                "n_clips": int(num_clips),
            }
            for i, (step, layer) in enumerate(keys)
            for j, estimator in enumerate(self.config.estimators)
        ]
