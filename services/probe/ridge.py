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
j) of every α and of all targets at once costs one n x n product and small Cholesky solves,
never a separate fit per target. The outer fits are solved in float64 (they equal
scikit-learn's ``Ridge`` within 1e-6); the inner fits, which only rank the α values, in float32
(half the cost; an ill-conditioned system falls back to float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from serlens.probe.core import single_threaded_ops
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

    Float64 torch on the CPU, so that the thread count is the caller's (``torch.set_num_threads``).

    Args:
        x: n x d design (already scaled as wanted); an unpenalised intercept is added.
    """

    def __init__(self, x: np.ndarray) -> None:
        design = torch.as_tensor(np.asarray(x, dtype=np.float64))
        n, d = design.shape
        centred = design - design.mean(dim=0)
        if d <= n:
            eigenvalues, vectors = torch.linalg.eigh(centred.T @ centred)
            basis = centred @ vectors  # columns: X_c v_k, squared norm λ_k
        else:
            eigenvalues, vectors = torch.linalg.eigh(centred @ centred.T)
            basis = vectors * eigenvalues.clamp_min(0.0).sqrt()
        self.num_clips = n
        self.eigenvalues = eigenvalues.clamp_min(0.0)
        self.basis = basis

    def deleted_residuals(
        self,
        y: np.ndarray,
        blocks: Sequence[np.ndarray],
        sets: Sequence[tuple[int, ...]],
        alphas: Sequence[float],
        *,
        dtype: torch.dtype = torch.float64,
    ) -> list[np.ndarray]:
        """Residuals on each deleted set of the fit on every other clip, for every α.

        Args:
            y: n x T targets.
            blocks: disjoint clip index arrays (the folds).
            sets: each a tuple of block numbers; its fit leaves out their union and is
                evaluated on it (rows in block order).
            alphas: the α grid (A values).
            dtype: precision of the hat blocks and solves; float32 about halves the cost, and a
                system too ill-conditioned for it is solved again in float64.

        Returns:
            One array [A, |S|, T] per set: ``y_S - prediction_S`` of the ridge fitted without S.
        """
        targets = torch.as_tensor(np.asarray(y, dtype=np.float64))
        centred = targets - targets.mean(dim=0)
        projected = (self.basis.T @ centred).to(dtype)  # [r, T]
        rows = [torch.as_tensor(np.asarray(b), dtype=torch.int64) for b in blocks]
        basis = [self.basis[r] for r in rows]
        full_basis = self.basis.to(dtype)
        centred_cast = centred.to(dtype)
        pairs = sorted({(i, j) for members in sets for i in members for j in members if i <= j})
        out = [np.empty((len(alphas), sum(len(rows[b]) for b in m), targets.shape[1])) for m in sets]
        for a, alpha in enumerate(alphas):
            weights = 1.0 / (self.eigenvalues + alpha)
            residuals = centred_cast - full_basis @ (weights.to(dtype)[:, None] * projected)
            scaled = [(b * weights.sqrt()).to(dtype) for b in basis]
            # Hat-matrix blocks H_ij = B_i B_jᵀ + 1/n, each computed once (H is symmetric).
            hat = {(i, j): scaled[i] @ scaled[j].T + 1.0 / self.num_clips for i, j in pairs}
            for s, members in enumerate(sets):
                right = torch.cat([residuals[rows[b]] for b in members], 0)
                solved = _solve(hat, members, right)
                if solved is None:  # not positive definite at this precision: float64 again
                    exact = [(b * weights.sqrt()) for b in basis]
                    hat64 = {(i, j): exact[i] @ exact[j].T + 1.0 / self.num_clips
                             for i in members for j in members if i <= j}
                    right64 = torch.cat([(centred - self.basis @ (weights[:, None] * (self.basis.T @ centred)))[rows[b]]
                                         for b in members], 0)
                    solved = _solve(hat64, members, right64)
                if solved is None:
                    raise InvalidInputError([("features", "the ridge system is singular; is α > 0?")],
                                            source=_SOURCE)
                out[s][a] = solved.double().numpy()
        return out


def _solve(
    hat: dict[tuple[int, int], torch.Tensor], members: tuple[int, ...], right: torch.Tensor
) -> torch.Tensor | None:
    """``(I - H_SS)⁻¹ right`` from the hat blocks of S's blocks; None when not positive definite."""
    system = -torch.cat([torch.cat([hat[(i, j)] if i <= j else hat[(j, i)].T for j in members], 1)
                         for i in members], 0)
    system.diagonal().add_(1.0)
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0:
        return None
    return torch.cholesky_solve(right, factor)


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
    targets = zscore(targets)
    if control_seed is not None:
        targets = np.hstack([targets, permute_within_folds(targets, fold_ids, control_seed)])
    system = HatSystem(zscore(features))
    labels = np.unique(fold_ids)
    members = {f: np.flatnonzero(fold_ids == f) for f in labels}
    pairs = list(combinations(range(len(labels)), 2))
    sets = [(i,) for i in range(len(labels))] + pairs
    blocks = [members[f] for f in labels]
    # Outer fits exactly (float64); the inner fits only rank the α values (float32 suffices).
    outer = system.deleted_residuals(targets, blocks, sets[: len(labels)], alphas)
    inner_fits = system.deleted_residuals(targets, blocks, pairs, alphas, dtype=torch.float32)
    inner = dict(zip(((int(labels[i]), int(labels[j])) for i, j in pairs), inner_fits, strict=True))

    residuals = np.empty_like(targets)
    chosen = np.empty((len(labels), targets.shape[1]), dtype=np.int64)
    for i, fold in enumerate(labels.tolist()):
        score = np.zeros((len(alphas), targets.shape[1]))
        for other in labels.tolist():
            if other == fold:
                continue
            pair = inner[(min(fold, other), max(fold, other))]
            # Rows of `other` inside the pair's residuals: the first block when other < fold.
            size = len(members[min(fold, other)])
            part = pair[:, :size] if other < fold else pair[:, size:]
            score += np.square(part).sum(axis=1)
        chosen[i] = score.argmin(axis=0)
        residuals[members[fold]] = np.take_along_axis(outer[i], chosen[i][None, None, :], 0)[0]
    total = np.square(targets - targets.mean(axis=0)).sum(axis=0)
    r2 = 1.0 - np.square(residuals).sum(axis=0) / np.where(total > 0, total, np.nan)
    width = y.shape[1]
    grid = np.asarray(alphas, dtype=np.float64)
    control = r2[width:] if control_seed is not None else np.full(width, np.nan)
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
    """``ridge_probe`` on every cell, one cell per worker thread (each on one torch thread).

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
    count = max(1, min(workers or torch.get_num_threads(), len(cells)))

    def one(x: np.ndarray) -> RidgeProbeResult:
        return ridge_probe(x, y, folds, alphas=alphas, control_seed=control_seed)

    with single_threaded_ops(), ThreadPoolExecutor(count, thread_name_prefix="ridge") as pool:
        return list(pool.map(one, cells))
