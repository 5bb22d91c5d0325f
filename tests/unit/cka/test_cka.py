"""CKA estimators, the batched path and CkaService."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from serlens.cka import CkaArgs, CkaService
from serlens.cka.core import cka_against, debiased_cka, linear_cka, standardize
from serlens.shared.errors import InvalidConfigError, InvalidInputError
from serlens.shared.schema import CKA, LINEAGE_FIELDS

RNG = np.random.default_rng(1234)


def _pair(
    n: int, p: int, q: int, *, shared: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two representations of n clips that share a few latent dimensions."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, shared))
    x = z @ rng.normal(size=(shared, p)) + rng.normal(size=(n, p))
    y = z @ rng.normal(size=(shared, q)) + 0.5 * rng.normal(size=(n, q))
    return x + 3.0, y - 1.5  # offsets: every estimator must centre


# Naive references, written straight from the definitions with n x n matrices.


def _hsic_biased(k: np.ndarray, m: np.ndarray) -> float:
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ m @ h)) / (n - 1) ** 2


def _hsic_unbiased(k: np.ndarray, m: np.ndarray) -> float:
    """The unbiased HSIC of Song et al. (2012), on the raw (uncentred) kernels."""
    n = k.shape[0]
    kt, lt = k.copy(), m.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    value = (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    )
    return float(value) / (n * (n - 3))


def _naive_cka(x: np.ndarray, y: np.ndarray, hsic) -> float:
    k, m = x @ x.T, y @ y.T
    return hsic(k, m) / np.sqrt(hsic(k, k) * hsic(m, m))


@pytest.mark.parametrize(("n", "p", "q"), [(40, 7, 5), (30, 80, 6), (12, 3, 20)])
def test_agrees_with_naive_reference_using_the_centring_matrix(n: int, p: int, q: int) -> None:
    x, y = _pair(n, p, q, seed=n + p)
    assert linear_cka(x, y) == pytest.approx(_naive_cka(x, y, _hsic_biased), abs=1e-5)
    assert debiased_cka(x, y) == pytest.approx(_naive_cka(x, y, _hsic_unbiased), abs=1e-5)


@pytest.mark.parametrize(("n", "p"), [(50, 20), (20, 60)])
def test_representation_against_itself_is_one(n: int, p: int) -> None:
    x = RNG.normal(size=(n, p)) + 2.0
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-6)
    assert debiased_cka(x, x) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(cka_against([x, x.astype(np.float32)], x), 1.0, atol=1e-6)


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling() -> None:
    x, y = _pair(60, 12, 9, seed=7)
    q_x, _ = np.linalg.qr(RNG.normal(size=(12, 12)))
    q_y, _ = np.linalg.qr(RNG.normal(size=(9, 9)))
    for estimator in (linear_cka, debiased_cka):
        base = estimator(x, y)
        assert 0.05 < abs(base) < 0.99
        assert estimator(x @ q_x, y) == pytest.approx(base, abs=1e-5)
        assert estimator(x, y @ q_y) == pytest.approx(base, abs=1e-5)
        assert estimator(4.2 * x, 0.03 * y) == pytest.approx(base, abs=1e-5)
    # Not invariant to an anisotropic scaling: the property above is not vacuous.
    stretch = np.diag(np.linspace(0.1, 10.0, 12))
    assert linear_cka(x @ stretch, y) != pytest.approx(linear_cka(x, y), abs=1e-3)


def test_small_case_worked_by_hand() -> None:
    # x = (0, 1, 2, 3), y = (0, 1, 0, 1), one feature each, n = 4.
    # Centred: x = (-1.5, -0.5, 0.5, 1.5), y = (-0.5, 0.5, -0.5, 0.5).
    # xᵀy = 0.75 - 0.25 - 0.25 + 0.75 = 1;  xᵀx = 2.25 + 0.25 + 0.25 + 2.25 = 5;  yᵀy = 1.
    # Linear CKA of one feature each is the squared correlation: 1² / (5 · 1) = 0.2.
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([[0.0], [1.0], [0.0], [1.0]])
    assert linear_cka(x, y) == pytest.approx(0.2, abs=1e-7)
    # Debiased: with k = diag(K) = (2.25, 0.25, 0.25, 2.25), l = diag(L) = (0.25,) * 4 and
    # n/(n-2) = 2, (n-1)(n-2) = 6, the unbiased HSIC (times n(n-3)) is
    #   tr(KL) - 2 k·l + Σk Σl / 6:
    #   xy: 1  - 2 · 1.25  + 5 · 1 / 6 = -2/3
    #   xx: 25 - 2 · 10.25 + 5 · 5 / 6 = 26/3
    #   yy: 1  - 2 · 0.25  + 1 · 1 / 6 = 2/3
    # CKA = (-2/3) / sqrt(26/3 · 2/3) = -2 / sqrt(52) = -1 / sqrt(13) = -0.27735...
    assert debiased_cka(x, y) == pytest.approx(-1.0 / np.sqrt(13.0), abs=1e-7)


def test_debiased_is_unbiased_where_linear_is_inflated() -> None:
    rng = np.random.default_rng(5)
    n, p, q = 60, 1200, 88
    linear, debiased = [], []
    for _ in range(3):
        x, y = rng.normal(size=(n, p)), rng.normal(size=(n, q))
        linear.append(linear_cka(x, y))
        debiased.append(debiased_cka(x, y))
    assert min(linear) > 0.5  # independent data, yet high: the bias for d >> n
    assert abs(float(np.mean(debiased))) < 0.02
    assert max(abs(v) for v in debiased) < 0.05


def test_batched_equals_one_by_one() -> None:
    reference = RNG.normal(size=(45, 6)).astype(np.float32)
    reps = [
        RNG.normal(size=(45, d)).astype(np.float32) + reference[:, :1] * w
        for d, w in [(10, 0.0), (30, 1.0), (60, 3.0), (5, 0.5)]
    ]
    batched = cka_against(reps, reference, ("debiased", "linear"))
    assert batched.shape == (4, 2)
    for i, rep in enumerate(reps):
        assert batched[i, 0] == pytest.approx(debiased_cka(rep, reference), abs=1e-12)
        assert batched[i, 1] == pytest.approx(linear_cka(rep, reference), abs=1e-12)
    assert batched[3, 1] > batched[0, 1]  # signal raises CKA


def test_standardize_zscores_and_zeroes_constant_features() -> None:
    x = np.column_stack([RNG.normal(3.0, 2.0, size=50), np.full(50, 7.0), RNG.normal(size=50)])
    z = standardize(x.astype(np.float32))
    assert z.dtype == np.float32
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=0), [1.0, 0.0, 1.0], atol=1e-5)
    assert standardize(x).dtype == np.float64


def test_constant_representation_gives_nan_not_an_error() -> None:
    values = cka_against([np.ones((10, 3))], RNG.normal(size=(10, 2)))
    assert np.isnan(values).all()


def test_args_validate_and_reject_unknown_keys() -> None:
    config = CkaArgs().to_config()
    assert config.estimators == ("linear", "debiased") and config.standardize
    assert CkaArgs(estimators=["debiased"]).to_config().estimators == ("debiased",)
    with pytest.raises(pydantic.ValidationError):
        CkaArgs(estimators=["rbf"])
    with pytest.raises(pydantic.ValidationError):
        CkaArgs(estimators=[])
    with pytest.raises(pydantic.ValidationError):
        CkaArgs(standardise=True)
    with pytest.raises(InvalidConfigError, match="rbf"):
        cka_against([np.ones((5, 2))], np.ones((5, 2)), ("rbf",))  # type: ignore[arg-type]


def _cells(n: int = 30) -> tuple[dict[tuple[int, int], np.ndarray], np.ndarray]:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(n, 8)).astype(np.float32)
    cells = {
        (step, layer): (
            reference @ rng.normal(size=(8, 16)) * (1.0 - layer / 3) + rng.normal(size=(n, 16))
        ).astype(np.float32)
        for step in (50, 0)
        for layer in (2, 0, 1)
    }
    return cells, reference


def test_service_rows_follow_the_cka_table() -> None:
    cells, reference = _cells()
    rows = CkaService(config=CkaArgs().to_config()).process(cells, reference)
    expected = set(CKA.schema.names) - {"train_key"} - {f.name for f in LINEAGE_FIELDS}
    assert all(set(row) == expected for row in rows)
    assert len(rows) == 6 * 2
    assert [(r["checkpoint_step"], r["layer"], r["estimator"]) for r in rows[:4]] == [
        (0, 0, "linear"),
        (0, 0, "debiased"),
        (0, 1, "linear"),
        (0, 1, "debiased"),
    ]
    assert all(r["reference"] == "egemaps" and r["n_clips"] == 30 for r in rows)
    linear = {
        (r["checkpoint_step"], r["layer"]): r["value"] for r in rows if r["estimator"] == "linear"
    }
    assert linear[(0, 0)] > linear[(0, 2)]  # the layer built from the reference is closer
    key = (50, 1)
    expected_value = linear_cka(standardize(cells[key]), standardize(reference))
    # The service works on float64 Grams; linear_cka on float32 BLAS products.
    assert linear[key] == pytest.approx(expected_value, abs=1e-6)


def test_service_without_standardisation_uses_raw_features() -> None:
    cells, reference = _cells()
    scaled = {k: v * np.linspace(1.0, 50.0, v.shape[1], dtype=np.float32) for k, v in cells.items()}
    config = CkaArgs(estimators=["linear"], standardize=False).to_config()
    raw = CkaService(config=config).process(scaled, reference)
    assert raw[0]["value"] == pytest.approx(linear_cka(scaled[(0, 0)], reference), abs=1e-6)
    standardised = CkaService(config=CkaArgs(estimators=["linear"]).to_config()).process(
        scaled, reference
    )
    assert raw[0]["value"] != pytest.approx(standardised[0]["value"], abs=1e-3)


def test_service_names_every_bad_cell() -> None:
    cells, reference = _cells()
    cells[(0, 1)] = cells[(0, 1)][:-1]
    cells[(50, 2)] = cells[(50, 2)].copy()
    cells[(50, 2)][4, 3] = np.nan
    service = CkaService(config=CkaArgs().to_config())
    with pytest.raises(InvalidInputError) as caught:
        service.process(cells, reference)
    culprits = dict(caught.value.problems)
    assert set(culprits) == {"checkpoint 0, layer 1", "checkpoint 50, layer 2"}
    assert "29 rows; expected 30" in culprits["checkpoint 0, layer 1"]
    assert "NaN" in culprits["checkpoint 50, layer 2"]
    assert caught.value.http_status == 422


def test_service_rejects_too_few_clips_and_nan_reference() -> None:
    service = CkaService(config=CkaArgs().to_config())
    with pytest.raises(InvalidInputError, match="3 clip"):
        service.process({(0, 0): np.ones((3, 4))}, RNG.normal(size=(3, 2)))
    reference = RNG.normal(size=(10, 2))
    reference[0, 0] = np.inf
    with pytest.raises(InvalidInputError, match="reference"):
        service.process({(0, 0): RNG.normal(size=(10, 4))}, reference)
    with pytest.raises(InvalidInputError, match="none given"):
        service.process({}, RNG.normal(size=(10, 2)))
