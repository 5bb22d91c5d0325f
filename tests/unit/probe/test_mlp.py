"""MLP probes: what a linear probe cannot decode, and the same numbers alone or stacked."""

from __future__ import annotations

import numpy as np
import pytest

from serlens.probe import ProbeArgs
from serlens.probe.batched import train_probes
from serlens.probe.core import stratified_split
from serlens.probe.naive import train_probe_naive


def _xor(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 2, size=(n, 2))
    y = (corners[:, 0] ^ corners[:, 1]).astype(np.int64)
    x = (2.0 * corners - 1.0) + 0.25 * rng.standard_normal((n, 2))
    return np.hstack([x, rng.standard_normal((n, 4))]).astype(np.float32), y


def test_mlp_decodes_xor_where_the_linear_probe_cannot() -> None:
    x, y = _xor(2000, seed=0)
    config = ProbeArgs(seeds=3, device="cpu", mlp_hidden=32).to_config()
    split = stratified_split(y, config.split, 0)
    linear = train_probes([x], y, split, config=config, head="linear")
    mlp = train_probes([x], y, split, config=config, head="mlp")
    assert mlp.f1_macro_best.min() >= 0.9
    assert linear.f1_macro_best.mean() <= 0.55  # chance, over 200 test clips and 3 seeds


def test_mlp_and_linear_agree_on_linearly_separable_data() -> None:
    rng = np.random.default_rng(1)
    y = np.resize(np.arange(3), 600)
    x = (rng.standard_normal((3, 10)) * 3.0)[y] + rng.standard_normal((600, 10))
    config = ProbeArgs(seeds=3, device="cpu", mlp_hidden=32).to_config()
    split = stratified_split(y, config.split, 0)
    linear = train_probes([x], y, split, config=config).f1_macro_best.mean()
    mlp = train_probes([x], y, split, config=config, head="mlp").f1_macro_best.mean()
    assert abs(linear - mlp) <= 0.02


def test_vectorised_mlp_equals_one_at_a_time() -> None:
    x, y = _xor(200, seed=2)
    rng = np.random.default_rng(3)
    sets = [x, x + 0.5 * rng.standard_normal(x.shape).astype(np.float32), x[:, ::-1].copy()]
    config = ProbeArgs(seeds=2, device="cpu", mlp_hidden=16).to_config()
    split = stratified_split(y, config.split, 0)
    results = train_probes(sets, y, split, config=config, head="mlp", cells_per_worker=2)
    for i, features in enumerate(sets):
        for seed in range(2):
            naive = train_probe_naive(features, y, split, seed=seed, config=config, head="mlp")
            batched = results.outcome(i, seed)
            assert (batched.epochs, batched.best_epoch) == (naive.epochs, naive.best_epoch)
            assert batched.f1_macro == pytest.approx(naive.f1_macro, abs=1e-9)
            assert batched.f1_macro_best == pytest.approx(naive.f1_macro_best, abs=1e-9)
            assert batched.val_loss == pytest.approx(naive.val_loss, abs=1e-5)
