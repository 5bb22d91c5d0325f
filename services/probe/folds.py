"""Speaker-grouped folds: no speaker in two folds, every clip in exactly one.

Probe scores are only speaker-independent when the clips of a speaker never sit on both sides
of a fit; these folds are the one place that decides which clips go together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serlens.shared.errors import InvalidInputError

_SOURCE = "probe folds"


def grouped_folds(groups: Sequence[object] | np.ndarray, num_folds: int, seed: int = 0) -> np.ndarray:
    """Assign each clip a fold so that the clips of one group (speaker) share a fold.

    Groups are shuffled (``numpy.random.default_rng(seed)``), then placed largest first on
    the fold with the fewest clips so far (ties: lowest fold), so folds hold near-equal clips.

    Args:
        groups: one group id (speaker) per clip.
        num_folds: K, at least 2.
        seed: seed of the shuffle.

    Returns:
        int64 array of fold ids 0..K-1, one per clip.

    Raises:
        InvalidInputError: fewer than 2 folds, or fewer distinct groups than folds.
    """
    values = np.asarray(groups)
    names, codes = np.unique(values, return_inverse=True)
    if num_folds < 2 or len(names) < num_folds:
        raise InvalidInputError(
            [("groups", f"{len(names)} distinct speaker(s) for {num_folds} folds; "
                        "grouped CV needs at least 2 folds and one speaker per fold")],
            source=_SOURCE,
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(names))
    sizes = np.bincount(codes, minlength=len(names))
    # Stable sort by size (descending) keeps the shuffled order among equal sizes.
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    load = np.zeros(num_folds, dtype=np.int64)
    fold_of_group = np.empty(len(names), dtype=np.int64)
    for group in order:
        target = int(np.argmin(load))
        fold_of_group[group] = target
        load[target] += sizes[group]
    return fold_of_group[codes]


def clip_folds(num_clips: int, num_folds: int, seed: int = 0) -> np.ndarray:
    """Clip-level folds (each clip its own group): the speaker-dependent contrast to ``grouped_folds``.

    Args:
        num_clips: n.
        num_folds: K.
        seed: seed of the shuffle.

    Returns:
        int64 fold ids 0..K-1, one per clip, fold sizes differing by at most one.
    """
    return grouped_folds(np.arange(num_clips), num_folds, seed)


def fold_parts(folds: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)`` of one fold: sorted int64 clip indices."""
    return np.flatnonzero(folds != fold).astype(np.int64), np.flatnonzero(folds == fold).astype(np.int64)


def grouped_cv_splits(
    groups: Sequence[object] | np.ndarray,
    num_folds: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.125,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Train/validation/test splits of speaker-grouped K-fold CV, one per outer fold.

    The test part of split f is fold f (so every clip is tested exactly once); the validation
    part (for early stopping) is whole speakers of the other folds, about ``val_fraction`` of
    them, chosen by an inner ``grouped_folds``; the rest is train.

    Args:
        groups: one speaker id per clip.
        num_folds: K outer folds.
        seed: seed of the outer and inner fold assignment.
        val_fraction: share of the training speakers' clips held out for validation.

    Returns:
        K tuples ``(train_idx, val_idx, test_idx)`` of sorted int64 clip indices.

    Raises:
        InvalidInputError: too few speakers for the folds, or for an inner validation part.
    """
    values = np.asarray(groups)
    folds = grouped_folds(values, num_folds, seed)
    splits = []
    for fold in range(num_folds):
        rest, test = fold_parts(folds, fold)
        # With few training speakers, one of them is the validation part.
        inner_folds = min(max(2, round(1.0 / val_fraction)), len(np.unique(values[rest])))
        inner = grouped_folds(values[rest], inner_folds, seed + 1 + fold)
        val = rest[inner == 0]
        train = rest[inner != 0]
        splits.append((train, val, test))
    return splits


def effective_folds(groups: Sequence[object] | np.ndarray, num_folds: int) -> int:
    """K, or the number of distinct groups when there are fewer (leave-one-speaker-out).

    Raises:
        InvalidInputError: fewer than 3 speakers (a test, a validation and a train speaker, or
            the nested CV's 3 folds, need at least that many).
    """
    count = len(np.unique(np.asarray(groups)))
    if count < 3:
        raise InvalidInputError(
            [("speakers", f"{count} speaker(s) in the analysis clips; speaker-grouped probes need at "
                          "least 3 (use probe.protocol: paper and probe.ridge: false, or more speakers)")],
            source=_SOURCE,
        )
    return min(num_folds, count)


def check_disjoint_groups(groups: np.ndarray, folds: np.ndarray) -> bool:
    """True when no group (speaker) appears in two folds."""
    pairs = np.unique(np.stack([np.unique(groups, return_inverse=True)[1], folds]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1]
