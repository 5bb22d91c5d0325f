"""Per-feature ridge probes: R² of every eGeMAPS feature from one pooled embedding, honestly.

For one cell (n clips x d features) and T targets (the 88 eGeMAPS features):

- features and targets are z-scored over the clips (unsupervised scaling of the inputs, the
  same for every fold, so one decomposition serves every fold);
- speaker-grouped K-fold CV (``serlens.probe.folds``): the out-of-fold prediction of every clip
  comes from a ridge (with an unpenalised intercept) fitted on the other folds;
- α per (outer fold, target) is chosen from a grid by nested grouped CV: the inner folds are
  the other K-1 folds, and the inner score is the squared error on fold j of the fit on every
  fold but i and j;
- R² = 1 - Σ(out-of-fold residual²) / Σ(target - mean)², over all clips;
- a control: the targets permuted within each fold (same folds, same α search), whose R² is
  what the probe finds where there is nothing to find; selectivity = R² - control R².

One decomposition per cell serves every fit: with ``X_c = X - mean`` decomposed once
(``eigh`` of the d x d covariance or the n x n Gram, whichever is smaller), the hat matrix of
the fit on all clips at α is ``H = 11ᵀ/n + P diag(1/(λ+α)) Pᵀ``. Deleting a set S of clips
and refitting gives, exactly, the residuals ``e_(-S) = (I - H_SS)⁻¹ e_S`` on S (the standard
case-deletion identity of penalised least squares, which holds for any deleted set and an
unpenalised intercept). So every outer fit (S = fold i) and every inner fit (S = folds i and
j) of all targets at once costs hat blocks and small Cholesky solves, never a separate fit
per target:

- inner fits (every pair of folds left out, every α): float32, from one n x n hat matrix per
  α (a BLAS ``syrk``); they only rank the α values (a system too ill-conditioned for float32
  is solved again in float64);
- outer fits (each fold left out): float64, and only at the α each target chose (they equal
  scikit-learn's ``Ridge`` within 1e-6).

The linear algebra is numpy's (OpenBLAS), one BLAS thread per cell; ``ridge_probes`` runs one
cell per worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from scipy.linalg import blas, lapack
from threadpoolctl import threadpool_limits

from serlens.shared.errors import InvalidInputError

_SOURCE = "ridge probe input"

#: Default α grid (for z-scored features of dimension ~10²-10³): 10 values, 1 to 10⁶.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(0, 6, 10))


@dataclass(frozen=True)
class RidgeProbeResult:
    """Per-target results of ``ridge_probe``.

    Attributes:
        r2: out-of-fold R² per target [T] (can be negative).
        r2_control: the same with the targets permuted within each fold [T].
        alpha: α chosen per outer fold and target [K, T].
        predictions: out-of-fold predictions of the z-scored targets [n, T].
    """

    r2: np.ndarray
    r2_control: np.ndarray
    alpha: np.ndarray
    predictions: np.ndarray

    @property
    def selectivity(self) -> np.ndarray:
        """R² minus control R², per target."""
        return self.r2 - self.r2_control


def zscore(values: np.ndarray) -> np.ndarray:
    """Columns z-scored over the rows (float64); constant columns become 0."""
    array = np.asarray(values, dtype=np.float64)
    centred = array - array.mean(axis=0)
    scale = centred.std(axis=0)
    return np.divide(centred, scale, out=np.zeros_like(centred), where=scale > 1e-12)


class HatSystem:
    """The decomposition of one design matrix, and the residuals of ridge refits without sets.

    numpy float64 (OpenBLAS, whose thread count the caller sets, e.g. with ``threadpoolctl``).

    Args:
        x: n x d design (already scaled as wanted); an unpenalised intercept is added.
    """

    def __init__(self, x: np.ndarray) -> None:
        design = np.asarray(x, dtype=np.float64)
        n, d = design.shape
        centred = design - design.mean(axis=0)
        if d <= n:
            eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
            basis = centred @ vectors  # columns: X_c v_k, squared norm λ_k
        else:
            eigenvalues, vectors = np.linalg.eigh(centred @ centred.T)
            basis = vectors * np.sqrt(eigenvalues.clip(0.0))
        self.num_clips = n
        self.eigenvalues = eigenvalues.clip(0.0)
        self.basis = basis

    def prepare(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centred targets [n, T] and their projection on the basis [r, T] (float64)."""
        targets = np.asarray(y, dtype=np.float64)
        centred = targets - targets.mean(axis=0)
        return centred, self.basis.T @ centred

    def deleted_residuals(
        self,
        y: np.ndarray,
        sets: Sequence[np.ndarray],
        alphas: Sequence[float],
        chosen: Sequence[np.ndarray],
    ) -> list[np.ndarray]:
        """Exact (float64) residuals on each deleted set of the fit on every other clip.

        Args:
            y: n x T targets.
            sets: clip index arrays; each fit leaves its set out and is evaluated on it.
            alphas: the α grid.
            chosen: per set, the index into ``alphas`` of each target's α [T].

        Returns:
            One array [|S|, T] per set: ``y_S - prediction_S`` of the ridge fitted without S,
            each target at its chosen α.
        """
        centred, projected = self.prepare(y)
        out = []
        for rows, picks in zip(sets, chosen, strict=True):
            residuals = np.empty((len(rows), centred.shape[1]))
            for a in np.unique(picks).tolist():
                columns = np.flatnonzero(picks == a)
                weights = 1.0 / (self.eigenvalues + alphas[a])
                basis = self.basis[rows]
                right = centred[np.ix_(rows, columns)] - basis @ (weights[:, None] * projected[:, columns])
                residuals[:, columns] = self._solved(_gram_upper(basis * np.sqrt(weights)), right)
            out.append(residuals)
        return out

    def ranking_residuals(
        self, y: np.ndarray, sets: Sequence[np.ndarray], alphas: Sequence[float]
    ) -> list[np.ndarray]:
        """The same for every α, in float32: residuals that only rank the α values.

        One float32 hat matrix per α serves every set (half the cost of float64); a system too
        ill-conditioned for float32 is solved again in float64.

        Returns:
            One array [A, |S|, T] per set.
        """
        centred, projected = self.prepare(y)
        # Rows in set order, so that every set is a gather of one reordered hat matrix.
        order, inverse = np.unique(np.concatenate(sets), return_inverse=True)
        bounds = np.cumsum([0] + [len(rows) for rows in sets])
        spans = [inverse[bounds[s]:bounds[s + 1]] for s in range(len(sets))]
        basis32, centred32 = self.basis[order].astype(np.float32), centred[order].astype(np.float32)
        projected32 = projected.astype(np.float32)
        out = [np.empty((len(alphas), len(rows), centred.shape[1])) for rows in sets]
        for a, alpha in enumerate(alphas):
            weights = (1.0 / (self.eigenvalues + alpha)).astype(np.float32)
            residuals = centred32 - basis32 @ (weights[:, None] * projected32)
            hat = _gram_upper(basis32 * np.sqrt(weights))
            for s, span in enumerate(spans):
                # Increasing rows: the gathered block's upper triangle is the hat's own.
                ranks = np.argsort(span)
                rows = span[ranks]
                solved = _solve(hat[np.ix_(rows, rows)], self.num_clips, residuals[rows])
                if solved is None:  # too ill-conditioned for float32: float64 again
                    picks = np.full(centred.shape[1], a)
                    out[s][a] = self.deleted_residuals(centred, [sets[s]], alphas, [picks])[0]
                else:
                    out[s][a][ranks] = solved
        return out

    def _solved(self, hat_upper: np.ndarray, right: np.ndarray) -> np.ndarray:
        solved = _solve(hat_upper, self.num_clips, right)
        if solved is None:
            raise InvalidInputError([("features", "the ridge system is singular; is α > 0?")],
                                    source=_SOURCE)
        return solved


def _gram_upper(rows: np.ndarray) -> np.ndarray:
    """``rows rowsᵀ`` with only its upper triangle filled (BLAS syrk: half a product)."""
    syrk = blas.dsyrk if rows.dtype == np.float64 else blas.ssyrk
    # rows.T is Fortran-ordered: syrk reads it without a copy, trans=1 gives rows rowsᵀ.
    return syrk(1.0, rows.T, trans=1, lower=0)


def _solve(hat_upper: np.ndarray, num_clips: int, right: np.ndarray) -> np.ndarray | None:
    """``(I - 11ᵀ/n - G)⁻¹ right`` for G given by its upper triangle; None when not positive definite."""
    system = np.subtract(-1.0 / num_clips, hat_upper, out=hat_upper)
    system.flat[:: len(system) + 1] += 1.0
    potrf, potrs = (lapack.dpotrf, lapack.dpotrs) if system.dtype == np.float64 else (
        lapack.spotrf, lapack.spotrs)
    # LAPACK reads Fortran order: a C-ordered system is passed transposed (its upper triangle
    # is then the lower one), so that no copy is made.
    lower = int(not system.flags.f_contiguous)
    factor, info = potrf(system.T if lower else system, lower=lower, clean=0, overwrite_a=1)
    if info != 0:
        return None
    solved, info = potrs(factor, right, lower=lower)
    return solved if info == 0 else None


def _check(x: np.ndarray, y: np.ndarray, folds: np.ndarray, alphas: Sequence[float]) -> None:
    problems = []
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or folds.shape != (x.shape[0],):
        problems.append(("shapes", f"x {x.shape}, y {y.shape}, folds {folds.shape}; "
                                   "expected n x d, n x T and n fold ids"))
    elif not (np.isfinite(x).all() and np.isfinite(y).all()):
        problems.append(("values", "features or targets hold NaN or infinite values"))
    if len(np.unique(folds)) < 3:
        problems.append(("folds", "nested CV needs at least 3 folds"))
    if not alphas or min(alphas) <= 0:
        problems.append(("alphas", f"{list(alphas)}; expected positive values"))
    if problems:
        raise InvalidInputError(problems, source=_SOURCE)


def permute_within_folds(y: np.ndarray, folds: np.ndarray, seed: int) -> np.ndarray:
    """Rows of ``y`` shuffled within each fold (the control task's targets)."""
    rng = np.random.default_rng(seed)
    out = np.array(y, copy=True)
    for fold in np.unique(folds):
        rows = np.flatnonzero(folds == fold)
        out[rows] = y[rng.permutation(rows)]
    return out


def ridge_probe(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    control_seed: int | None = 0,
) -> RidgeProbeResult:
    """Out-of-fold R² of ridge probes for every target at once, α by nested grouped CV.

    Args:
        x: n x d features of one cell (z-scored here).
        y: n x T targets (z-scored here).
        folds: fold id per clip (``grouped_folds``), at least 3 folds.
        alphas: the α grid.
        control_seed: seed of the within-fold permutation of the control (None: no control,
            ``r2_control`` is NaN).

    Returns:
        ``RidgeProbeResult`` with R², control R² and the chosen α.

    Raises:
        InvalidInputError: mismatched shapes, NaN, fewer than 3 folds, a non-positive α.
    """
    features, targets, fold_ids = np.asarray(x), np.asarray(y), np.asarray(folds)
    _check(features, targets, fold_ids, alphas)
    # One BLAS thread: one cell's products are too small to gain from a team (see ridge_probes).
    with threadpool_limits(1, user_api="blas"):
        return _probe_cell(features, _targets(targets, fold_ids, control_seed), fold_ids, alphas,
                           width=targets.shape[1])


def _targets(y: np.ndarray, folds: np.ndarray, control_seed: int | None) -> np.ndarray:
    """The z-scored targets, and beside them their control (permuted within folds) if asked."""
    targets = zscore(y)
    if control_seed is None:
        return targets
    return np.hstack([targets, permute_within_folds(targets, folds, control_seed)])


def _probe_cell(
    features: np.ndarray, targets: np.ndarray, fold_ids: np.ndarray, alphas: Sequence[float],
    *, width: int,
) -> RidgeProbeResult:
    """``ridge_probe`` on checked inputs; ``targets`` from ``_targets``, the first ``width`` real."""
    system = HatSystem(zscore(features))
    labels = np.unique(fold_ids)
    members = [np.flatnonzero(fold_ids == f) for f in labels]
    pairs = list(combinations(range(len(labels)), 2))
    # The inner fits (every pair of folds left out) only rank the α values: float32.
    inner = dict(zip(pairs, system.ranking_residuals(
        targets, [np.concatenate([members[i], members[j]]) for i, j in pairs], alphas), strict=True))
    chosen = np.empty((len(labels), targets.shape[1]), dtype=np.int64)
    for i in range(len(labels)):
        score = np.zeros((len(alphas), targets.shape[1]))
        for j in set(range(len(labels))) - {i}:
            pair = inner[(min(i, j), max(i, j))]
            # Rows of fold j inside the pair's residuals: the first block when j < i.
            size = len(members[min(i, j)])
            score += np.square(pair[:, :size] if j < i else pair[:, size:]).sum(axis=1)
        chosen[i] = score.argmin(axis=0)
    # The outer fits, exactly (float64), only at the α each target chose.
    residuals = np.empty_like(targets)
    for rows, outer in zip(members, system.deleted_residuals(targets, members, alphas, list(chosen)), strict=True):
        residuals[rows] = outer
    total = np.square(targets - targets.mean(axis=0)).sum(axis=0)
    r2 = 1.0 - np.square(residuals).sum(axis=0) / np.where(total > 0, total, np.nan)
    grid = np.asarray(alphas, dtype=np.float64)
    control = r2[width:] if targets.shape[1] > width else np.full(width, np.nan)
    return RidgeProbeResult(
        r2=r2[:width],
        r2_control=control,
        alpha=grid[chosen[:, :width]],
        predictions=(targets - residuals)[:, :width],
    )


def ridge_probes(
    cells: Sequence[np.ndarray],
    y: np.ndarray,
    folds: np.ndarray,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    control_seed: int | None = 0,
    workers: int | None = None,
) -> list[RidgeProbeResult]:
    """``ridge_probe`` on every cell, one cell per worker thread (each on one BLAS thread).

    Each cell's linear algebra is too small to gain from a thread team on a shared machine;
    one cell per core scales instead. The results do not depend on ``workers``.

    Args:
        cells: n x d_i feature arrays.
        y: n x T targets.
        folds: fold id per clip.
        alphas: the α grid.
        control_seed: seed of the control's permutation (None: no control).
        workers: threads (default: ``torch.get_num_threads()``).

    Returns:
        One ``RidgeProbeResult`` per cell, in order.
    """
    fold_ids, targets = np.asarray(folds), np.asarray(y)
    for x in cells:  # every cell checked before any work starts
        _check(np.asarray(x), targets, fold_ids, alphas)
    prepared = _targets(targets, fold_ids, control_seed)  # the same for every cell
    count = max(1, min(workers or torch.get_num_threads(), len(cells)))

    def one(x: np.ndarray) -> RidgeProbeResult:
        return _probe_cell(np.asarray(x), prepared, fold_ids, alphas, width=targets.shape[1])

    # One BLAS thread per worker (a process-wide setting, restored on exit).
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(count, thread_name_prefix="ridge") as pool:
        return list(pool.map(one, cells))
