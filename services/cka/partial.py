"""Partial CKA: speaker, gender and sentence regressed out of both views.

Both views are projected on the orthogonal complement of a one-hot design C (intercept plus
each confound's levels): ``X_res = M X`` with ``M = I - Q Qᵀ`` (Q an orthonormal basis of C's
columns, rank r). Linear partial CKA is linear CKA of the residuals.

The debiased estimator needs its degrees of freedom corrected: residuals live in an
``n' = n - r`` dimensional space, so the unbiased HSIC is taken on n' rows, in a basis of that
space. Any orthonormal basis gives an estimator unbiased under independence (for Gaussian
noise the rotated rows are again independent); averaging over all of them (Haar measure)
removes the arbitrary choice and leaves a closed form in ``t_AB = <MKM, MLM>``, ``t_A = tr MKM``
and ``t_B = tr MLM``: with ``c = (t_A t_B + 2 t_AB) / (n' + 2)``,
``H = (t_AB - c) + (n' c - t_A t_B) / ((n'-1)(n'-2)) - 2 (t_AB - c) / (n'-2)``,
which is 0 in expectation when the residuals are independent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from serlens.cka.config import Estimator
from serlens.shared.errors import InvalidInputError

#: Relative singular-value cut below which a design column adds no rank.
_RANK_TOLERANCE = 1e-10


def design_basis(factors: Mapping[str, Sequence[object]]) -> np.ndarray:
    """Orthonormal basis (n x r) of the intercept plus the one-hot columns of each factor.

    Collinear columns (gender within speaker) are absorbed: r is the design's rank.

    Args:
        factors: confound name -> one label per clip (e.g. speaker, gender, sentence).

    Raises:
        InvalidInputError: no factor, or factors of different lengths.
    """
    lengths = {len(v) for v in factors.values()}
    if len(lengths) != 1:
        raise InvalidInputError([("confounds", f"lengths {sorted(lengths)}; expected one per clip")],
                                source="partial CKA")
    n = lengths.pop()
    columns = [np.ones(n)]
    for labels in factors.values():
        values = np.asarray([str(v) for v in labels])
        columns += [(values == level).astype(np.float64) for level in np.unique(values)]
    u, s, _ = np.linalg.svd(np.column_stack(columns), full_matrices=False)
    return u[:, s > _RANK_TOLERANCE * s[0]]


def residualize(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``x - Q (Qᵀ x)``: what is left of each feature after the design (float64)."""
    x64 = np.asarray(x, dtype=np.float64)
    return x64 - basis @ (basis.T @ x64)


def _hsic(estimator: Estimator, t_ab: np.ndarray | float, t_a: np.ndarray | float, t_b: np.ndarray | float,
          dof: int) -> np.ndarray:
    if estimator == "linear":
        return np.asarray(t_ab, dtype=np.float64)
    c = (np.asarray(t_a) * t_b + 2 * np.asarray(t_ab)) / (dof + 2)
    return np.asarray((t_ab - c) + (dof * c - np.asarray(t_a) * t_b) / ((dof - 1) * (dof - 2))
                      - 2 * (t_ab - c) / (dof - 2), dtype=np.float64)


class PartialCka:
    """Partial CKA of many views against one reference, from the views' centred Grams.

    Args:
        reference_gram: the reference's Gram L (n x n; centred or not).
        basis: ``design_basis`` of the confounds (it holds the intercept).

    Raises:
        InvalidInputError: fewer than 4 residual degrees of freedom.
    """

    def __init__(self, reference_gram: np.ndarray, basis: np.ndarray) -> None:
        n, rank = basis.shape
        self.dof = n - rank
        if self.dof < 4:
            raise InvalidInputError([("confounds", f"design rank {rank} leaves {self.dof} of {n} degrees of "
                                                   "freedom; partial CKA needs at least 4")], source="partial CKA")
        self.basis = basis
        self.residual_reference = self._project(np.asarray(reference_gram, dtype=np.float64))
        self.trace_b = float(np.trace(self.residual_reference))
        self.self_b = float(np.vdot(self.residual_reference, self.residual_reference))

    def _project(self, gram: np.ndarray) -> np.ndarray:
        kq = gram @ self.basis
        return gram - kq @ self.basis.T - self.basis @ kq.T + self.basis @ (self.basis.T @ kq) @ self.basis.T

    def values(self, gram: np.ndarray, estimators: Sequence[Estimator]) -> np.ndarray:
        """Partial CKA of one view (its Gram K, n x n) with the reference, per estimator."""
        k = np.asarray(gram, dtype=np.float64)
        kq = k @ self.basis
        qkq = self.basis.T @ kq
        # ||MKM||² = ||K||² - 2 ||KQ||² + ||QᵀKQ||² and <MKM, MLM> = <K, MLM> (M idempotent).
        self_a = float(np.vdot(k, k) - 2 * np.vdot(kq, kq) + np.vdot(qkq, qkq))
        trace_a = float(np.trace(k) - np.trace(qkq))
        t_ab = float(np.vdot(k, self.residual_reference))
        out = []
        for e in estimators:
            cross = _hsic(e, t_ab, trace_a, self.trace_b, self.dof)
            denominator = _hsic(e, self_a, trace_a, trace_a, self.dof) * _hsic(e, self.self_b, self.trace_b,
                                                                                self.trace_b, self.dof)
            out.append(float(cross / np.sqrt(denominator)) if denominator > 0 else float("nan"))
        return np.asarray(out)
