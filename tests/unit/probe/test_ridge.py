"""Known answers of the per-feature ridge probes and of the grouped folds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from serlens.probe.folds import check_disjoint_groups, clip_folds, grouped_cv_splits, grouped_folds
from serlens.probe.ridge import HatSystem, ridge_probe, zscore
from serlens.shared.errors import InvalidInputError

N, D, SPEAKERS = 1231, 1024, 91


def _speakers(rng: np.random.Generator, n: int = N) -> np.ndarray:
    return rng.integers(0, SPEAKERS, n)


def test_grouped_folds_never_share_a_speaker() -> None:
    rng = np.random.default_rng(0)
    speakers = _speakers(rng)
    folds = grouped_folds(speakers, 5, seed=3)
    assert check_disjoint_groups(speakers, folds)
    for fold in range(5):
        assert not set(speakers[folds == fold]) & set(speakers[folds != fold])
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= np.bincount(speakers).max()
    assert not check_disjoint_groups(speakers, clip_folds(N, 5))


def test_grouped_cv_splits_test_every_clip_once() -> None:
    speakers = _speakers(np.random.default_rng(1), 400)
    splits = grouped_cv_splits(speakers, 5, seed=0)
    tested = np.concatenate([test for _, _, test in splits])
    assert np.array_equal(np.sort(tested), np.arange(400))
    for train, val, test in splits:
        parts = [set(speakers[p]) for p in (train, val, test)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert len(train) + len(val) + len(test) == 400


def test_too_few_speakers_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        grouped_folds(["a", "b", "a"], 5)


def test_vectorised_ridge_equals_sklearn_per_target() -> None:
    rng = np.random.default_rng(2)
    n, d = 300, 120
    x = zscore(rng.standard_normal((n, d)) @ rng.standard_normal((d, d)))
    y = zscore(x[:, :5] @ rng.standard_normal((5, 4)) + rng.standard_normal((n, 4)))
    folds = grouped_folds(_speakers(rng, n), 5)
    alphas = [0.3, 10.0, 300.0]
    sets = [np.flatnonzero(folds == f) for f in range(5)]
    system = HatSystem(x)
    worst = 0.0
    for a, alpha in enumerate(alphas):
        deleted = system.deleted_residuals(y, sets, alphas, [np.full(y.shape[1], a)] * len(sets))
        for rows, residuals in zip(sets, deleted, strict=True):
            train = np.setdiff1d(np.arange(n), rows)
            for t in range(y.shape[1]):
                reference = Ridge(alpha=alpha).fit(x[train], y[train, t]).predict(x[rows])
                worst = max(worst, float(np.abs(y[rows, t] - residuals[:, t] - reference).max()))
    assert worst < 1e-6


def test_nested_alpha_choice_equals_brute_force_sklearn() -> None:
    rng = np.random.default_rng(3)
    n, d = 240, 60
    x = rng.standard_normal((n, d))
    y = x[:, :3] @ rng.standard_normal((3, 2)) + 2.0 * rng.standard_normal((n, 2))
    folds = grouped_folds(_speakers(rng, n), 4)
    alphas = [0.1, 3.0, 100.0, 3000.0]
    result = ridge_probe(x, y, folds, alphas=alphas, control_seed=None)
    xs, ys = zscore(x), zscore(y)
    for i in range(4):
        test, train = folds == i, folds != i
        for t in range(2):
            errors = []
            for alpha in alphas:
                error = 0.0
                for j in set(range(4)) - {i}:
                    fit = train & (folds != j)
                    model = Ridge(alpha=alpha).fit(xs[fit], ys[fit, t])
                    error += float(np.square(ys[folds == j, t] - model.predict(xs[folds == j])).sum())
                errors.append(error)
            best = alphas[int(np.argmin(errors))]
            assert result.alpha[i, t] == best
            outer = Ridge(alpha=best).fit(xs[train], ys[train, t]).predict(xs[test])
            np.testing.assert_allclose(result.predictions[test, t], outer, atol=1e-6)


def _factor_cells(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like x: 8 strong latent factors seen through 1,024 noisy dimensions."""
    latent = rng.standard_normal((N, 8))
    x = latent @ rng.standard_normal((8, D)) + 0.5 * rng.standard_normal((N, D))
    return x, latent


def test_planted_r2_of_one_half_is_recovered() -> None:
    rng = np.random.default_rng(4)
    x, latent = _factor_cells(rng)
    signal = latent @ rng.standard_normal(8)
    signal /= signal.std()
    y = np.sqrt(0.5) * signal + np.sqrt(0.5) * rng.standard_normal(N)  # population R² = 0.5
    noise = rng.standard_normal((N, 40))  # targets with nothing to find
    folds = grouped_folds(_speakers(rng), 5)
    result = ridge_probe(x, np.column_stack([y, noise]), folds)
    assert abs(result.r2[0] - 0.5) <= 0.03
    assert result.selectivity[0] > 0.45
    # The null: permuted (control) and unrelated targets.
    null = np.concatenate([result.r2[1:], result.r2_control])
    assert null.mean() <= 0.0
    assert np.percentile(null, 95) <= 0.01


def test_speaker_mean_target_is_not_decodable_across_speakers() -> None:
    rng = np.random.default_rng(5)
    speakers = _speakers(rng)
    identity = rng.standard_normal((SPEAKERS, D))
    x = identity[speakers] + rng.standard_normal((N, D))
    y = rng.standard_normal(SPEAKERS)[speakers][:, None]  # depends on the speaker mean only
    grouped = ridge_probe(x, y, grouped_folds(speakers, 5), control_seed=None)
    clip_level = ridge_probe(x, y, clip_folds(N, 5), control_seed=None)
    assert grouped.r2[0] <= 0.02
    assert clip_level.r2[0] >= 0.5


def test_speaker_grouped_probes_need_three_speakers() -> None:
    from serlens.probe.folds import effective_folds

    assert effective_folds(["a", "b", "c", "d"], 5) == 4  # leave-one-speaker-out
    with pytest.raises(InvalidInputError, match="at least 3"):
        effective_folds(["a", "b", "a"], 5)
