"""Linear and debiased CKA between representations of the same clips (numpy only).

Both estimators compare two representations ``X`` (n x p) and ``Y`` (n x q) of the same n
clips through their linear kernels ``K = X Xᵀ`` and ``L = Y Yᵀ``:

- linear CKA (Kornblith et al., 2019): ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with the
  biased HSIC ``tr(K H L H)`` (H the centring matrix; its constant factor cancels);
- debiased CKA: the same ratio with the unbiased HSIC estimator of Song et al. (2012), which
  works on the kernels with their diagonals zeroed and removes the upward bias that linear CKA
  has when the feature count is large next to n. It needs n > 3.

Nothing here forms an n x n matrix it does not need. With the features centred (``K 1 = 0``)
every term reduces to quantities of the representations themselves:

- ``tr(K L) = ||Xᵀ Y||²_F`` and ``tr(K K) = ||Xᵀ X||²_F = ||X Xᵀ||²_F``;
- with ``k = diag(K)`` (squared row norms), ``K̃ = K - diag(k)``: ``1ᵀ K̃ 1 = -Σk`` and
  ``K̃ 1 = -k``, so the unbiased estimator's numerator is
  ``tr(K L) - n/(n-2) k·l + (Σk)(Σl) / ((n-1)(n-2))`` (its ``1/(n(n-3))`` factor cancels).

The unbiased estimator does not change when a constant is added to a feature, so centring
first is exact for it too. The Gram of each representation is taken in the smaller of its
sample or feature space (``XᵀX`` when p <= n), in float32 BLAS; every sum is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serlens.cka.config import ESTIMATORS, Estimator
from serlens.shared.arrays import matrix_problem
from serlens.shared.errors import InvalidConfigError, InvalidInputError

#: Fewest clips the debiased estimator is defined for (its normaliser is n (n - 3)).
MIN_CLIPS_DEBIASED = 4

_SOURCE = "CKA input"


def standardize(x: np.ndarray) -> np.ndarray:
    """Z-score every feature (column) of a representation.

    Statistics are computed in float64 (population standard deviation). A feature with zero
    variance becomes all zeros rather than NaN, so it adds nothing to either kernel.

    Args:
        x: n x d representation (clips x features).

    Returns:
        The standardised representation, float32 when ``x`` is float32, else float64.

    Raises:
        InvalidInputError: ``x`` is not two-dimensional.
    """
    array = np.asarray(x)
    if array.ndim != 2:
        raise InvalidInputError(
            [("representation", f"shape {array.shape}; expected (clips, features)")], source=_SOURCE
        )
    dtype: type[np.floating[Any]] = np.float32 if array.dtype == np.float32 else np.float64
    out: np.ndarray = array.astype(dtype, copy=True)
    out -= array.mean(axis=0, dtype=np.float64).astype(dtype)
    std = np.sqrt(np.einsum("ij,ij->j", out, out, dtype=np.float64) / max(len(out), 1))
    scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    out *= scale.astype(dtype)
    return out


def check_representation(x: np.ndarray, *, name: str, num_clips: int | None = None) -> np.ndarray:
    """Return ``x`` as a 2-D float array after checking its shape and values.

    Args:
        x: n x d representation.
        name: what to call ``x`` in an error, e.g. ``checkpoint 50, layer 3``.
        num_clips: the row count ``x`` must have (None: any).

    Raises:
        InvalidInputError: ``x`` is not 2-D, has no features, has the wrong row count, or
            holds NaN or infinite values.
    """
    reason = matrix_problem(x, num_rows=num_clips, rows_are="clip of the reference")
    if reason is not None:
        raise InvalidInputError([(name, reason)], source=_SOURCE)
    array = np.asarray(x)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


@dataclass(frozen=True)
class _Summary:
    """What both estimators need of one representation, computed once."""

    centred: np.ndarray  # n x d float32, column means removed
    self_product: float  # tr(K K) = ||Xᵀ X||²_F
    row_norms: np.ndarray  # k = diag(K), float64
    total: float  # Σk = tr(K)

    @classmethod
    def of(cls, x: np.ndarray) -> _Summary:
        centred = x.astype(np.float32, copy=True)
        centred -= x.mean(axis=0, dtype=np.float64).astype(np.float32)
        n, d = centred.shape
        gram = centred.T @ centred if d <= n else centred @ centred.T
        gram64 = gram.astype(np.float64)
        row_norms = np.einsum("ij,ij->i", centred, centred, dtype=np.float64)
        return cls(centred, float(np.vdot(gram64, gram64)), row_norms, float(row_norms.sum()))


def _hsic(
    estimator: str,
    product: float,
    k_diag: np.ndarray,
    l_diag: np.ndarray,
    k_sum: float,
    l_sum: float,
    n: int,
) -> float:
    """HSIC up to a factor shared by numerator and denominator of CKA.

    ``product`` is tr(K L); ``k_diag``/``l_diag`` the kernels' diagonals, ``k_sum``/``l_sum``
    their sums (see the module docstring).
    """
    if estimator == "linear":
        return product
    correction = n / (n - 2) * float(np.dot(k_diag, l_diag))
    return product - correction + k_sum * l_sum / ((n - 1) * (n - 2))


def _ratio(cross: float, self_x: float, self_y: float) -> float:
    if not (self_x > 0 and self_y > 0):
        return float("nan")
    return cross / float(np.sqrt(self_x * self_y))


def _check_estimators(estimators: Sequence[str], num_clips: int) -> tuple[str, ...]:
    names = tuple(estimators)
    unknown = [e for e in names if e not in ESTIMATORS]
    if unknown or not names:
        raise InvalidConfigError(
            f"cka.estimators: {list(names)}; expected some of {list(ESTIMATORS)}"
        )
    minimum = MIN_CLIPS_DEBIASED if "debiased" in names else 2
    if num_clips < minimum:
        raise InvalidInputError(
            [
                (
                    "reference",
                    f"{num_clips} clip(s); estimators {list(names)} need at least {minimum}",
                )
            ],
            source=_SOURCE,
        )
    return names


def cka_against(
    reps: Sequence[np.ndarray],
    reference: np.ndarray,
    estimators: Sequence[Estimator] = ESTIMATORS,
) -> np.ndarray:
    """CKA of each representation with one reference, for several estimators at once.

    The reference's Gram is computed once, and each representation's once for all
    estimators; representations are read one at a time, so ``reps`` may be a lazy sequence.

    Args:
        reps: representations, each n x d_i (rows: the same clips as ``reference``).
        reference: n x q reference representation (e.g. the 88 eGeMAPS features).
        estimators: ``linear`` and/or ``debiased``.

    Returns:
        float64 array (len(reps), len(estimators)); NaN where CKA is undefined (a
        representation that is constant over the clips).

    Raises:
        InvalidInputError: a representation or the reference has a bad shape, another row
            count than the reference, non-finite values, or too few clips for an estimator.
        InvalidConfigError: an unknown estimator.
    """
    ref = check_representation(reference, name="reference")
    n = ref.shape[0]
    names = _check_estimators(estimators, n)
    y = _Summary.of(ref)
    self_y = {
        e: _hsic(e, y.self_product, y.row_norms, y.row_norms, y.total, y.total, n) for e in names
    }
    out = np.empty((len(reps), len(names)), dtype=np.float64)
    for i, rep in enumerate(reps):
        x = _Summary.of(check_representation(rep, name=f"representation {i}", num_clips=n))
        cross = x.centred.T @ y.centred
        cross64 = cross.astype(np.float64)
        product = float(np.vdot(cross64, cross64))
        for j, e in enumerate(names):
            hsic_xy = _hsic(e, product, x.row_norms, y.row_norms, x.total, y.total, n)
            hsic_xx = _hsic(e, x.self_product, x.row_norms, x.row_norms, x.total, x.total, n)
            out[i, j] = _ratio(hsic_xy, hsic_xx, self_y[e])
    return out


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al., 2019) of two representations of the same clips.

    Args:
        x: n x p representation.
        y: n x q representation.

    Returns:
        CKA in [0, 1]; NaN when either representation is constant over the clips.

    Raises:
        InvalidInputError: bad shapes, different row counts, fewer than 2 clips, NaN.
    """
    return float(cka_against([x], y, ("linear",))[0, 0])


def debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased CKA: linear CKA with the unbiased HSIC estimator of Song et al. (2012).

    Args:
        x: n x p representation.
        y: n x q representation.

    Returns:
        Debiased CKA: about 0 for independent representations whatever the feature counts,
        and may be slightly negative; NaN when undefined.

    Raises:
        InvalidInputError: bad shapes, different row counts, fewer than 4 clips, NaN.
    """
    return float(cka_against([x], y, ("debiased",))[0, 0])
