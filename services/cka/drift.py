"""Drift: CKA between the embeddings themselves (checkpoint k vs 0 or k-1; layer x layer).

Every value comes from inner products of the cells' centred Grams, ``<K_a, K_b>``, taken for
every pair at once as one matrix product of their packed strips (``grams.StripLayout``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serlens.cka import grams
from serlens.cka.config import Estimator


def pairwise_cka(inner: np.ndarray, diagonals: np.ndarray, num_clips: int,
                 estimators: Sequence[Estimator]) -> np.ndarray:
    """CKA of every pair of cells (estimators x cells x cells), symmetric with unit diagonal.

    Args:
        inner: ``<K_a, K_b>`` of the cells' centred Grams (cells x cells).
        diagonals: the Grams' diagonals (cells x n).
        num_clips: n.
        estimators: ``linear`` and/or ``debiased``.
    """
    inner = (inner + inner.T) / 2  # exactly symmetric whatever the summation order
    d = np.asarray(diagonals, dtype=np.float64)
    kl = d @ d.T
    traces = d.sum(axis=1)
    out = np.empty((len(estimators), len(inner), len(inner)))
    for i, e in enumerate(estimators):
        h = grams.hsic(e, inner, kl, traces[:, None], traces[None, :], num_clips)
        self_terms = np.diag(h).copy()
        out[i] = grams.ratio(h, self_terms[:, None], self_terms[None, :])
        np.fill_diagonal(out[i], np.where(self_terms > 0, 1.0, np.nan))
    return out
