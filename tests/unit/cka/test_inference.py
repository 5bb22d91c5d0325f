"""Calibration and known answers of the CKA inference: nulls, speakers, BH, jackknife, partial, drift."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from serlens.cka import CkaArgs, CkaService, grams, stats
from serlens.cka.partial import PartialCka, design_basis, residualize

ESTIMATORS = ("linear", "debiased")


def _service(permutations: int, scheme: str = "auto", **extra: object) -> CkaService:
    args = CkaArgs(permutations=permutations, scheme=scheme, confounds=[], gram_dtype="float64", **extra)
    return CkaService(config=args.to_config())


def _p_values(rows: list[dict]) -> list[float]:
    return [r["p_value"] for r in rows]


@pytest.mark.slow  # 1,000 and 300 simulated replicates
def test_plain_permutation_p_values_are_calibrated_on_independent_anisotropic_data():
    service = _service(199, scheme="plain")
    p = []
    for replicate in range(1000):
        rng = np.random.default_rng(replicate)
        x = rng.normal(size=(200, 12)) * np.geomspace(5.0, 0.1, 12)
        y = rng.standard_t(5, size=(200, 6)) * np.geomspace(3.0, 0.2, 6)
        p.append(_p_values(service.process({(0, 0): x}, y)))
    p_values = np.asarray(p)
    rejected = (p_values <= 0.05).mean(axis=0)
    assert np.all((rejected >= 0.032) & (rejected <= 0.068)), rejected
    for j in range(2):
        assert scipy_stats.kstest(p_values[:, j], "uniform").pvalue > 0.01


def _speaker_only(rng: np.random.Generator, speakers: int = 15, clips: int = 10) -> tuple[np.ndarray, ...]:
    """Both views depend on the speaker and on nothing else."""
    labels = np.repeat(np.arange(speakers), clips)
    x = rng.normal(size=(speakers, 8))[labels] * 1.5 + rng.normal(size=(labels.size, 8))
    y = rng.normal(size=(speakers, 5))[labels] * 1.5 + rng.normal(size=(labels.size, 5))
    return x, y, labels.astype(str)


@pytest.mark.slow  # 1,000 and 300 simulated replicates
def test_shared_speaker_effect_fools_the_plain_shuffle_not_the_within_speaker_one():
    plain, within = _service(199, scheme="plain"), _service(199, scheme="within_speaker")
    plain_p, within_p = [], []
    for replicate in range(600):
        x, y, speakers = _speaker_only(np.random.default_rng(10_000 + replicate))
        if replicate < 100:
            plain_p.append(_p_values(plain.process({(0, 0): x}, y)))
        within_p.append(_p_values(within.process({(0, 0): x}, y, speakers=list(speakers))))
    assert np.all((np.asarray(plain_p) <= 0.05).mean(axis=0) >= 0.9)
    rejected = (np.asarray(within_p) <= 0.05).mean(axis=0)
    assert np.all((rejected >= 0.03) & (rejected <= 0.07)), rejected


def test_bh_q_values_equal_statsmodels():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=150), rng.uniform(0, 0.01, size=50)])
    p[[5, 17]] = p[[3, 4]]  # ties
    rng.shuffle(p)
    expected = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(stats.bh_q_values(p), expected, rtol=0, atol=1e-15)
    grid = p.reshape(8, 25).copy()
    grid[0, 0] = np.nan
    q = stats.bh_q_values(grid)
    assert np.isnan(q[0, 0])
    np.testing.assert_allclose(q.ravel()[1:], multipletests(grid.ravel()[1:], method="fdr_bh")[1], atol=1e-15)


def _population_cka(cov_x: np.ndarray, mixing: np.ndarray, cov_noise: np.ndarray) -> float:
    cross = cov_x @ mixing.T
    cov_y = mixing @ cov_x @ mixing.T + cov_noise
    return float(np.sum(cross**2) / np.sqrt(np.sum(cov_x**2) * np.sum(cov_y**2)))


def test_speaker_jackknife_interval_covers_the_population_value():
    setup = np.random.default_rng(0)
    var_speaker, var_clip = setup.uniform(0.5, 2, 6), setup.uniform(0.5, 2, 6)
    mixing, var_noise = setup.normal(size=(4, 6)) * 0.3, setup.uniform(0.5, 2, 4)
    truth = _population_cka(np.diag(var_speaker + var_clip), mixing, np.diag(var_noise))
    service = _service(0)
    covered = 0
    for replicate in range(300):
        rng = np.random.default_rng(100 + replicate)
        labels = np.repeat(np.arange(15), 10)
        x = (rng.normal(size=(15, 6)) * np.sqrt(var_speaker))[labels] + rng.normal(size=(150, 6)) * np.sqrt(var_clip)
        y = x @ mixing.T + rng.normal(size=(150, 4)) * np.sqrt(var_noise)
        row = service.analyse({(0, 0): x}, y, speakers=list(labels.astype(str))).cka[1]
        assert row["estimator"] == "debiased" and row["n_speakers"] == 15
        covered += row["ci_low"] <= truth <= row["ci_high"]
    assert 0.92 <= covered / 300 <= 0.98, covered


def _loo_partial(x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Partial debiased CKA with each speaker left out (the design loses that speaker too)."""
    out = []
    for speaker in np.unique(labels):
        keep = labels != speaker
        basis = design_basis({"speaker": list(labels[keep])})
        partial = PartialCka(grams.centred_gram(y[keep]), basis)
        out.append(partial.values(grams.centred_gram(x[keep]), ("debiased",))[0])
    return np.asarray(out)


def test_partial_cka_removes_a_shared_speaker_effect():
    x, y, labels = _speaker_only(np.random.default_rng(7), speakers=15, clips=12)
    basis = design_basis({"speaker": list(labels), "gender": [str(int(s) % 2) for s in labels]})
    assert basis.shape[1] == 15  # gender is nested in speaker: no extra rank
    design = np.column_stack([np.ones(len(labels))] + [(labels == s).astype(float) for s in np.unique(labels)])
    assert np.abs(design.T @ residualize(x, basis)).max() < 1e-10
    partial = PartialCka(grams.centred_gram(y), basis).values(grams.centred_gram(x), ESTIMATORS)
    plain = _service(199, scheme="plain").process({(0, 0): x}, y)
    interval = stats.jackknife_interval(partial[1], _loo_partial(x, y, labels))
    assert abs(partial[1]) < 3 * interval.standard_error
    assert plain[1]["value"] > 0.2 and plain[1]["p_value"] <= 0.01


def test_partial_debiased_is_song_estimator_averaged_over_residual_bases():
    rng = np.random.default_rng(11)
    labels = np.repeat(np.array(list("abcd")), 6)
    x, y = rng.normal(size=(24, 5)), rng.normal(size=(24, 3))
    y[:, 0] += x[:, 0]
    basis = design_basis({"speaker": list(labels)})
    closed = PartialCka(grams.centred_gram(y), basis).values(grams.centred_gram(x), ("debiased",))
    complement = np.linalg.svd(np.eye(24) - basis @ basis.T)[0][:, : 24 - basis.shape[1]]
    numerators = []
    for _ in range(4000):
        rotation = np.linalg.qr(rng.normal(size=(20, 20)))[0]
        z, w = (complement @ rotation).T @ x, (complement @ rotation).T @ y
        numerators.append([_song(z @ z.T, w @ w.T), _song(z @ z.T, z @ z.T), _song(w @ w.T, w @ w.T)])
    mean = np.mean(numerators, axis=0)
    assert closed[0] == pytest.approx(mean[0] / np.sqrt(mean[1] * mean[2]), abs=0.01)


def _song(k: np.ndarray, ell: np.ndarray) -> float:
    n = len(k)
    kt, lt = k - np.diag(np.diag(k)), ell - np.diag(np.diag(ell))
    one = np.ones(n)
    value = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    return float(value - 2 / (n - 2) * one @ kt @ lt @ one)


def test_drift_identity_symmetry_and_reembedding_floor():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(60, 16)).astype(np.float32)
    cells = {(0, layer): base @ rng.normal(size=(16, 16)).astype(np.float32) for layer in range(3)}
    cells |= {(10, layer): cells[(0, layer)] + 0.3 * rng.normal(size=(60, 16)).astype(np.float32)
              for layer in range(3)}
    again = {layer: (cells[(0, layer)] * (1 + 1e-7 * rng.normal(size=(60, 16)))).astype(np.float32)
             for layer in range(3)}
    tables = _service(0).analyse(cells, rng.normal(size=(60, 4)), reembedded=again)
    drift = {(r["checkpoint_step"], r["layer"], r["estimator"], r["against"]): r["value"] for r in tables.drift}
    for e in ESTIMATORS:
        assert abs(drift[(0, 1, e, "step0")] - 1) < 1e-12
        assert drift[(10, 1, e, "step0")] < 0.999
        assert drift[(0, 2, e, "reembed")] >= 0.99999
        matrix = np.full((3, 3), np.nan)
        for r in tables.layers:
            if r["checkpoint_step"] == 10 and r["estimator"] == e:
                matrix[r["layer_a"], r["layer_b"]] = r["value"]
        np.testing.assert_array_equal(matrix, matrix.T)
        np.testing.assert_array_equal(np.diag(matrix), 1.0)
    changes = [r for r in tables.changes if r["baseline"] == "step0"]
    assert changes == []  # no speakers: no change tests


def test_changes_against_step0_recover_a_planted_drop():
    rng = np.random.default_rng(9)
    labels = np.repeat(np.arange(15), 8)
    reference = rng.normal(size=(15, 6))[labels] + rng.normal(size=(120, 6))
    cells = {(0, 0): reference @ rng.normal(size=(6, 10)) + 0.5 * rng.normal(size=(120, 10)),
             (5, 0): rng.normal(size=(120, 10)) + 0.1 * reference[:, :1]}
    tables = _service(99).analyse(cells, reference, speakers=list(labels.astype(str)))
    row = next(r for r in tables.changes if r["estimator"] == "debiased" and r["baseline"] == "step0")
    assert row["difference"] < 0 and row["ci_high"] < 0 and row["p_value"] < 0.01
