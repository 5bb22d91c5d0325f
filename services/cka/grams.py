"""HSIC terms from centred Gram matrices: effective rank, permutations, leave-one-speaker-out.

Every statistic here is built from the centred linear Gram ``K = Xc Xcᵀ`` (n x n) of each
view, computed once. With K and L centred (``K 1 = 0``), for ``k = diag(K)``:

- linear HSIC: ``<K, L>``; its value under a permutation π of L's clips is ``<K, L[π, π]>``
  (``P L Pᵀ`` is still centred);
- the unbiased HSIC (Song et al. 2012) times ``n (n - 3)``:
  ``<K, L> - n/(n-2) k·l + tr K tr L / ((n-1)(n-2))``. Under π, ``tr L`` does not change (the
  kernels with their diagonals zeroed stay zero-diagonal, so every diagonal term is
  invariant); only the cross term ``<K, L[π, π]>`` and the row-sum term ``k·l[π]`` change.

So the permutation null of both estimators costs one inner product of K with a permuted L
per permutation; permutations are batched as one matrix product over every cell at once
(``StripLayout``: about half of each Gram, off-diagonal blocks weighted 2). Leave-one-speaker-out values come from
the same Grams by subtracting the left-out speaker's rows and columns (no Gram recomputed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serlens.cka.config import Estimator


def centred_gram(x: np.ndarray) -> np.ndarray:
    """The centred linear Gram ``Xc Xcᵀ`` (n x n, float64) of a representation.

    Column means are removed in float64; the product runs in the representation's own
    precision (float32 embeddings: float32 BLAS, ~1e-7 relative; float64 data: float64).
    """
    array = np.asarray(x)
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    centred = (array - array.mean(axis=0, dtype=np.float64)).astype(dtype)
    return np.asarray(centred @ centred.T, dtype=np.float64)


def effective_rank(gram: np.ndarray) -> float:
    """``tr(K)² / ||K||²_F`` of a centred Gram: how many directions carry its variance.

    1 for a rank-one view; d for d uncorrelated features of equal variance. NaN for a
    constant view.
    """
    total = float(np.trace(gram, dtype=np.float64))
    squared = float(np.einsum("ij,ij->", gram, gram, dtype=np.float64))
    return total * total / squared if squared > 0 else float("nan")


def null_mean_linear(rank_x: float, rank_y: float, num_clips: int) -> float:
    """Mean of linear CKA over every permutation of one view's clips: ``sqrt(βx βy) / (n - 1)``.

    Args:
        rank_x: effective rank of the first view's centred Gram.
        rank_y: effective rank of the second view's.
        num_clips: n.
    """
    return float(np.sqrt(rank_x * rank_y) / (num_clips - 1))


def hsic(estimator: Estimator, inner: np.ndarray | float, kl: np.ndarray | float,
         trace_k: np.ndarray | float, trace_l: np.ndarray | float, n: int) -> np.ndarray:
    """HSIC of centred Grams from their terms, up to a factor shared within one CKA.

    Args:
        estimator: ``linear`` (biased HSIC) or ``debiased`` (unbiased HSIC x n (n - 3)).
        inner: ``<K, L>``.
        kl: ``diag(K) · diag(L)``.
        trace_k: ``tr K``.
        trace_l: ``tr L``.
        n: clips.
    """
    if estimator == "linear":
        return np.asarray(inner, dtype=np.float64)
    return np.asarray(inner - n / (n - 2) * np.asarray(kl) + np.asarray(trace_k) * trace_l
                      / ((n - 1) * (n - 2)), dtype=np.float64)


def ratio(cross: np.ndarray, self_x: np.ndarray, self_y: np.ndarray) -> np.ndarray:
    """``cross / sqrt(self_x self_y)``, NaN where a self term is not positive."""
    denominator = np.sqrt(np.clip(np.asarray(self_x) * np.asarray(self_y), 0, None))
    positive = (np.asarray(self_x) > 0) & (np.asarray(self_y) > 0)
    return np.where(positive, cross / np.where(positive, denominator, 1.0), np.nan)


def draw_permutations(num_clips: int, count: int, *, groups: np.ndarray | None, seed: int) -> np.ndarray:
    """``count`` random permutations of ``range(num_clips)`` (int32, count x n).

    Args:
        num_clips: n.
        count: m.
        groups: a group label per clip (speakers): clips move only within their group; None
            shuffles all clips (the plain scheme).
        seed: random seed (same seed, same permutations).
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        return np.argsort(rng.random((count, num_clips)), axis=1).astype(np.int32)
    out = np.empty((count, num_clips), dtype=np.int32)
    for label in np.unique(groups):
        members = np.flatnonzero(groups == label)
        out[:, members] = members[np.argsort(rng.random((count, members.size)), axis=1)]
    return out


class StripLayout:
    """A symmetric n x n matrix packed as block-row strips of its upper block triangle.

    Rows are cut into ``blocks`` bands; band I keeps columns from its own first column to the
    end (its diagonal block whole, the blocks right of it). Weights 1 on diagonal blocks and
    2 right of them make ``pack(K) · strips(L) = <K, L>`` for symmetric K and L, with about
    ``(blocks + 1) / (2 blocks)`` of the n² entries. A permuted L is gathered strip by strip
    with two contiguous ``take`` calls (rows, then columns), no index arithmetic per entry.

    Args:
        num_clips: n.
        blocks: bands (more: closer to half the entries, more but smaller copies); default
            one band per ~160 clips, at most 8 (small n: one band, the whole matrix).
    """

    def __init__(self, num_clips: int, blocks: int | None = None) -> None:
        count = blocks if blocks is not None else max(1, min(8, num_clips // 160))
        edges = np.linspace(0, num_clips, min(count, num_clips) + 1).round().astype(int)
        self.num_clips = num_clips
        self.bands = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
        self.size = sum((b - a) * (num_clips - a) for a, b in self.bands)
        weight_parts = []
        for a, b in self.bands:
            band = np.full((b - a, num_clips - a), 2.0)
            band[:, : b - a] = 1.0
            weight_parts.append(band.ravel())
        self.weights = np.concatenate(weight_parts)

    def strips(self, matrix: np.ndarray, perm: np.ndarray | None = None, *,
               out: np.ndarray | None = None) -> np.ndarray:
        """The strips of ``matrix[perm][:, perm]`` (unweighted), flattened into ``out``."""
        target = np.empty(self.size, dtype=matrix.dtype) if out is None else out
        offset = 0
        for a, b in self.bands:
            size = (b - a) * (self.num_clips - a)
            view = target[offset : offset + size].reshape(b - a, self.num_clips - a)
            if perm is None:
                view[...] = matrix[a:b, a:]
            else:
                np.take(np.take(matrix, perm[a:b], axis=0), perm[a:], axis=1, out=view)
            offset += size
        return target

    def pack(self, gram: np.ndarray, *, dtype: type[np.floating] = np.float64) -> np.ndarray:
        """Weighted strips of a Gram: a row of the stack ``permuted_inner`` multiplies."""
        return (self.strips(np.asarray(gram, dtype=np.float64)) * self.weights).astype(dtype)

    def inner(self, packed: np.ndarray, gram: np.ndarray) -> float:
        """``<K, L>`` from K packed and L a full symmetric matrix."""
        return float(np.dot(packed.astype(np.float64), self.strips(np.asarray(gram, dtype=np.float64))))

    def pairwise(self, stack: np.ndarray, *, chunk: int = 16) -> np.ndarray:
        """``<K_a, K_b>`` of every pair of packed Grams (float64, cells x cells)."""
        out = np.empty((len(stack), len(stack)))
        inverse = (1.0 / self.weights).astype(stack.dtype)
        for start in range(0, len(stack), chunk):
            unweighted = stack[start : start + chunk] * inverse
            out[:, start : start + chunk] = stack @ unweighted.T
        return out


def permuted_inner(stack: np.ndarray, gram_y: np.ndarray, perms: np.ndarray, layout: StripLayout, *,
                   chunk: int = 64) -> np.ndarray:
    """``<K_c, L[π, π]>`` for every cell c and permutation π (cells x m, float64).

    Args:
        stack: the cells' Grams packed by ``layout.pack`` (cells x layout.size).
        gram_y: the reference's centred Gram L (n x n).
        perms: permutations (m x n) from ``draw_permutations``.
        layout: the packing of ``stack``.
        chunk: permutations per matrix product (memory: chunk x layout.size values).
    """
    source = np.ascontiguousarray(gram_y, dtype=stack.dtype)
    out = np.empty((stack.shape[0], len(perms)), dtype=np.float64)
    buffer = np.empty((min(chunk, len(perms)), layout.size), dtype=stack.dtype)
    for start in range(0, len(perms), chunk):
        block = perms[start : start + chunk]
        for b, perm in enumerate(block):
            layout.strips(source, perm, out=buffer[b])
        gathered = buffer[: len(block)]
        # OpenBLAS is slow for a handful of rows times a long inner dimension; turn it around.
        out[:, start : start + len(block)] = (gathered @ stack.T).T if len(stack) < 16 else stack @ gathered.T
    return out


class LeaveOneGroupOut:
    """CKA of many views with one reference, each group's clips left out in turn.

    The sub-Gram of the remaining clips is not centred; the linear estimator re-centres it
    through its row sums and the unbiased one does not need centring, so both come from
    sums over the left-out group's rows of the full centred Grams. The reference's own sums
    are computed once.

    Args:
        gram_y: centred Gram of the reference (n x n).
        groups: a group label (speaker) per clip.
    """

    def __init__(self, gram_y: np.ndarray, groups: np.ndarray) -> None:
        labels = np.unique(groups)
        self.indicator = (np.asarray(groups)[:, None] == labels[None, :]).astype(np.float64)  # n x G
        self.remaining = self.indicator.shape[0] - self.indicator.sum(axis=0)
        self.gram_y = np.asarray(gram_y, dtype=np.float64)
        self.y_in = self.gram_y @ self.indicator
        self.terms_yy = _loo_terms(self.gram_y, self.y_in, self.gram_y, self.y_in, self.indicator)

    def values(self, gram_x: np.ndarray, estimators: Sequence[Estimator]) -> np.ndarray:
        """Leave-one-group-out CKA of one view (its centred Gram), groups x estimators."""
        gram = np.asarray(gram_x, dtype=np.float64)
        x_in = gram @ self.indicator
        terms_xy = _loo_terms(gram, x_in, self.gram_y, self.y_in, self.indicator)
        terms_xx = _loo_terms(gram, x_in, gram, x_in, self.indicator)
        out = np.empty((self.indicator.shape[1], len(estimators)))
        for j, estimator in enumerate(estimators):
            out[:, j] = ratio(_loo_hsic(estimator, terms_xy, self.remaining),
                              _loo_hsic(estimator, terms_xx, self.remaining),
                              _loo_hsic(estimator, self.terms_yy, self.remaining))
        return out


def leave_one_group_out(gram_x: np.ndarray, gram_y: np.ndarray, groups: np.ndarray,
                        estimators: Sequence[Estimator]) -> np.ndarray:
    """CKA of two views with each group's clips left out (groups x estimators); see ``LeaveOneGroupOut``."""
    return LeaveOneGroupOut(gram_y, groups).values(gram_x, estimators)


def _loo_terms(a: np.ndarray, a_in: np.ndarray, b: np.ndarray, b_in: np.ndarray,
               indicator: np.ndarray) -> dict[str, np.ndarray]:
    """Per left-out group g (complement S): the sums both estimators need over S x S.

    ``a_in = A @ indicator`` (column g: A 1_g), likewise ``b_in``.
    """
    product = a * b
    row_product = product.sum(axis=1)
    diag_a, diag_b = np.diag(a), np.diag(b)
    inside = np.einsum("ig,ig->g", product @ indicator, indicator)
    keep = 1.0 - indicator
    # With A 1 = 0, the rows of S sum to -(A 1_g) on S, and 1_Sᵀ A 1_S = 1_gᵀ A 1_g.
    return {
        "inner": row_product.sum() - 2 * indicator.T @ row_product + inside,
        "rows": np.einsum("ig,ig,ig->g", a_in, b_in, keep),
        "total_a": np.einsum("ig,ig->g", a_in, indicator),
        "total_b": np.einsum("ig,ig->g", b_in, indicator),
        "diag": keep.T @ (diag_a * diag_b),
        "trace_a": keep.T @ diag_a,
        "trace_b": keep.T @ diag_b,
        "diag_rows_a": np.einsum("i,ig,ig->g", diag_a, b_in, keep),
        "diag_rows_b": np.einsum("i,ig,ig->g", diag_b, a_in, keep),
    }


def _loo_hsic(estimator: Estimator, t: dict[str, np.ndarray], m: np.ndarray) -> np.ndarray:
    """HSIC on the remaining m clips of each group's complement (uncentred sub-Gram terms)."""
    if estimator == "linear":
        return t["inner"] - 2 * t["rows"] / m + t["total_a"] * t["total_b"] / m**2
    # Row sums of the sub-Gram are r = -(A 1_g) on S; with zeroed diagonals, Ã 1 = r - diag.
    tilde_inner = t["inner"] - t["diag"]
    tilde_total = (t["total_a"] - t["trace_a"]) * (t["total_b"] - t["trace_b"])
    tilde_rows = t["rows"] + t["diag_rows_a"] + t["diag_rows_b"] + t["diag"]
    return tilde_inner + tilde_total / ((m - 1) * (m - 2)) - 2 / (m - 2) * tilde_rows
