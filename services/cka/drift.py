"""Drift: CKA between the embeddings themselves (checkpoint k vs 0 or k-1; layer x layer).

Every value comes from inner products of the cells' centred Grams, ``<K_a, K_b>``, taken for
every pair at once as one matrix product of their (weighted) upper triangles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serlens.cka import grams
from serlens.cka.config import Estimator


def pairwise_cka(stack: np.ndarray, diagonals: np.ndarray, num_clips: int,
                 estimators: Sequence[Estimator]) -> np.ndarray:
    """CKA of every pair of cells (estimators x cells x cells), symmetric with unit diagonal.

    Args:
        stack: ``grams.triangle_stack`` of the cells' centred Grams.
        diagonals: the Grams' diagonals (cells x n).
        num_clips: n.
        estimators: ``linear`` and/or ``debiased``.
    """
    inner = np.asarray(stack @ stack.T, dtype=np.float64)
    d = np.asarray(diagonals, dtype=np.float64)
    kl = d @ d.T
    traces = d.sum(axis=1)
    out = np.empty((len(estimators), len(stack), len(stack)))
    for i, e in enumerate(estimators):
        h = grams.hsic(e, inner, kl, traces[:, None], traces[None, :], num_clips)
        self_terms = np.diag(h).copy()
        out[i] = grams.ratio(h, self_terms[:, None], self_terms[None, :])
        np.fill_diagonal(out[i], np.where(self_terms > 0, 1.0, np.nan))
    return out
