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
from serlens.cka.analysis import CkaTables, analyse_cells
from serlens.cka.config import CkaConfig
from serlens.shared.errors import InvalidConfigError, InvalidInputError


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

    def process(self, cells: Mapping[tuple[int, int], np.ndarray], reference: np.ndarray,
                **options: Any) -> list[dict[str, Any]]:
        """The ``cka`` rows alone: one row per (cell, estimator); ``analyse`` has the arguments.

        Raises:
            InvalidInputError, InvalidConfigError: as ``analyse``.
        """
        return self.analyse(cells, reference, **options).cka

    def analyse(
        self,
        cells: Mapping[tuple[int, int], np.ndarray],
        reference: np.ndarray,
        *,
        reference_name: str = "egemaps",
        speakers: Sequence[str] | None = None,
        confounds: Mapping[str, Sequence[str]] | None = None,
        reembedded: Mapping[int, np.ndarray] | None = None,
    ) -> CkaTables:
        """Every CKA table: cells vs the reference, changes, drift, layer x layer.

        Args:
            cells: ``(checkpoint_step, layer) -> n x d`` mean-pooled embeddings; row i of every
                cell and of ``reference`` is the same clip.
            reference: n x q reference representation (the 88 eGeMAPS features).
            reference_name: what the rows' ``reference`` column says.
            speakers: the speaker of each clip (enables within-speaker permutations and the
                speaker jackknife).
            confounds: factor name -> label per clip (speaker, gender, sentence); those named
                in ``config.confounds`` are regressed out for ``partial_value``.
            reembedded: layer -> the first checkpoint's cell embedded again with another batch
                composition (the drift noise floor).

        Returns:
            The rows of ``cka`` (ordered by checkpoint, layer, estimator), ``cka_changes``,
            ``cka_drift`` and ``cka_layers``, without ``train_key`` and lineage.

        Raises:
            InvalidInputError: no cells; fewer than 4 clips; a cell or the reference that is
                not 2-D, has another row count than the reference, or holds NaN/inf (every
                offending cell is named).
            InvalidConfigError: ``within_speaker`` permutations without speakers.
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
        if self.config.scheme == "within_speaker" and speakers is None:
            raise InvalidConfigError("cka.scheme: 'within_speaker' needs a speaker per clip; none was given")
        factors = {name: labels for name, labels in (confounds or {}).items() if name in self.config.confounds}
        again = None
        if reembedded:
            again = {layer: core.standardize(x) if self.config.standardize else x for layer, x in reembedded.items()}
        return analyse_cells(keys, reps, ref, self.config, reference_name=reference_name, speakers=speakers,
                             confounds=factors or None, reembedded=again)
