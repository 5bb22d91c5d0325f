"""Known answers for the Gram-form statistics: permutation null means, permuted = recomputed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from serlens.cka import grams


def _views(n: int, p: int, q: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * rng.uniform(0.2, 3.0, size=p)
    y = 0.5 * x[:, :q] @ rng.normal(size=(q, q)) + rng.normal(size=(n, q)) * rng.uniform(0.5, 2.0, size=q)
    return x, y


def _unbiased_hsic(k: np.ndarray, ell: np.ndarray) -> float:
    """Song et al. (2012), equation (5), written out on uncentred kernels."""
    n = len(k)
    kt, lt = k - np.diag(np.diag(k)), ell - np.diag(np.diag(ell))
    one = np.ones(n)
    value = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    return (value - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def reference_cka(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Linear and debiased CKA from explicit float64 Gram matrices (no shortcut)."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, ell = x @ x.T, y @ y.T
    linear = np.trace(k @ h @ ell @ h) / np.sqrt(np.trace(k @ h @ k @ h) * np.trace(ell @ h @ ell @ h))
    debiased = _unbiased_hsic(k, ell) / np.sqrt(_unbiased_hsic(k, k) * _unbiased_hsic(ell, ell))
    return [float(linear), float(debiased)]


def test_mean_over_all_permutations_at_n7_is_the_analytic_null():
    x, y = _views(7, 5, 3, seed=0)
    perms = np.array(list(itertools.permutations(range(7))))
    assert len(perms) == 5040
    values = np.array([reference_cka(x, y[perm]) for perm in perms])
    gx, gy = grams.centred_gram(x), grams.centred_gram(y)
    expected = grams.null_mean_linear(grams.effective_rank(gx), grams.effective_rank(gy), 7)
    assert abs(values[:, 0].mean() - expected) < 1e-7
    assert abs(values[:, 1].mean()) < 1e-8


@pytest.mark.parametrize("dtype", [np.float64])
def test_fast_permuted_statistic_equals_recomputation_from_permuted_rows(dtype):
    x1, y = _views(40, 12, 6, seed=1)
    x2, _ = _views(40, 9, 6, seed=2)
    speakers = np.repeat(np.arange(5), 8)
    perms = np.vstack([grams.draw_permutations(40, 7, groups=None, seed=3),
                       grams.draw_permutations(40, 6, groups=speakers, seed=4)])
    assert all(set(perm[speakers == s]) == set(np.flatnonzero(speakers == s)) for perm in perms[7:] for s in range(5))
    cells = [grams.centred_gram(x1), grams.centred_gram(x2)]
    gy = grams.centred_gram(y)
    layout = grams.StripLayout(40, blocks=3)
    stack = np.stack([layout.pack(gram, dtype=dtype) for gram in cells])
    inner = grams.permuted_inner(stack, gy, perms, layout, chunk=4)
    n = 40
    for c, (x, gram) in enumerate(zip([x1, x2], cells, strict=True)):
        k, ly = np.diag(gram), np.diag(gy)
        for b, perm in enumerate(perms):
            expected = reference_cka(x, y[perm])
            fast = [grams.ratio(grams.hsic(e, inner[c, b], k @ ly[perm], k.sum(), ly.sum(), n),
                                grams.hsic(e, np.vdot(gram, gram), k @ k, k.sum(), k.sum(), n),
                                grams.hsic(e, np.vdot(gy, gy), ly @ ly, ly.sum(), ly.sum(), n))
                    for e in ("linear", "debiased")]
            np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-9)


def test_leave_one_group_out_equals_recomputation_without_the_group():
    x, y = _views(45, 10, 4, seed=5)
    groups = np.repeat(np.array(["a", "b", "c", "d", "e"]), [7, 9, 10, 11, 8])
    loo = grams.leave_one_group_out(grams.centred_gram(x), grams.centred_gram(y), groups, ("linear", "debiased"))
    for g, label in enumerate(np.unique(groups)):
        keep = groups != label
        np.testing.assert_allclose(loo[g], reference_cka(x[keep], y[keep]), rtol=0, atol=1e-10)


def test_effective_rank_of_isotropic_and_rank_one_views():
    rng = np.random.default_rng(6)
    rank_one = np.outer(rng.normal(size=50), rng.normal(size=4))
    assert grams.effective_rank(grams.centred_gram(rank_one)) == pytest.approx(1.0)
    iso = np.linalg.qr(rng.normal(size=(50, 5)))[0]
    iso -= iso.mean(axis=0)
    iso = np.linalg.qr(iso)[0]
    assert grams.effective_rank(grams.centred_gram(iso)) == pytest.approx(5.0, rel=0.05)
