"""Probe rules, the vectorised trainer against the naive one, and ProbeService."""

from __future__ import annotations

import math

import numpy as np
import pydantic
import pytest
import torch
from sklearn.metrics import f1_score

from serlens.probe import ProbeArgs, ProbeService
from serlens.probe.batched import train_probes
from serlens.probe.core import _metrics, batch_order, standardize_by_train, stratified_split
from serlens.probe.heads import init_params
from serlens.probe.naive import train_probe_naive
from serlens.shared.errors import InvalidConfigError, InvalidInputError
from serlens.shared.schema import (
    EMOTIONS,
    LINEAGE_FIELDS,
    PROBE_CLASSES,
    PROBE_CONFUSION,
    PROBE_FEATURES,
    PROBES,
)

CPU = {"device": "cpu"}


def _problem(
    n: int, dims_strengths, *, classes: int = 4, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Balanced labels and one feature set per (dim, class-signal strength)."""
    rng = np.random.default_rng(seed)
    y = np.resize(np.arange(classes), n)
    rng.shuffle(y)
    sets = []
    for dim, strength in dims_strengths:
        means = rng.normal(size=(classes, dim)) * strength
        sets.append((means[y] + rng.normal(size=(n, dim)) + 2.0).astype(np.float32))
    return y, sets


# ----------------------------------------------------------------------------- split


def test_stratified_split_partitions_every_class_in_the_fractions() -> None:
    labels = np.array(["ANG"] * 50 + ["SAD"] * 31 + ["NEU"] * 20)
    train, val, test = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    everything = np.concatenate([train, val, test])
    assert np.array_equal(np.sort(everything), np.arange(len(labels)))  # disjoint, covering
    assert all(np.array_equal(p, np.sort(p)) for p in (train, val, test))
    for label, count in (("ANG", 50), ("SAD", 31), ("NEU", 20)):
        sizes = [int(np.sum(labels[p] == label)) for p in (train, val, test)]
        assert sizes[1] == sizes[2] == math.floor(0.1 * count + 0.5)
        assert sum(sizes) == count
    again = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    other = stratified_split(labels, (0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(val, other[1])


def test_stratified_split_names_classes_too_small_and_rejects_bad_fractions() -> None:
    labels = ["ANG"] * 10 + ["FEA"] * 2 + ["HAP"] * 1
    with pytest.raises(InvalidInputError) as caught:
        stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    assert [c for c, _ in caught.value.problems] == ["class 'FEA'", "class 'HAP'"]
    assert "at least 3" in caught.value.problems[0][1]
    with pytest.raises(InvalidConfigError):
        stratified_split(labels, (0.8, 0.3, 0.1), seed=0)


# ----------------------------------------------------------------------------- rules


def test_initialisation_and_batch_order_depend_on_their_seeds_only() -> None:
    weight, bias = init_params("linear", 50, 6, seed=2, hidden=0)
    again, _ = init_params("linear", 50, 6, seed=2, hidden=0)
    assert weight.shape == (6, 50) and bias.shape == (1, 6)
    other = init_params("linear", 50, 6, seed=3, hidden=0)[0]
    assert torch.equal(weight, again) and not torch.equal(weight, other)
    assert (
        weight.abs().max() <= 1 / math.sqrt(50) and weight.std() > 0.05
    )  # nn.Linear's U(±1/sqrt(d))
    w1, _, w2, _ = init_params("mlp", 50, 6, seed=2, hidden=8)
    assert w1.shape == (8, 50) and w2.shape == (6, 8) and w2.abs().max() <= 1 / math.sqrt(8)
    order = batch_order(40, epoch=3, seed=1)
    assert np.array_equal(np.sort(order), np.arange(40))
    assert np.array_equal(order, batch_order(40, epoch=3, seed=1))
    assert not np.array_equal(order, batch_order(40, epoch=4, seed=1))
    assert not np.array_equal(order, batch_order(40, epoch=3, seed=2))  # the seed sets the order


def test_standardisation_uses_train_statistics_and_zeroes_constant_features() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 3.0, size=(50, 4)).astype(np.float32)
    x[:, 1] = 0.1
    x[40:, 2] += 100.0  # only outside the train part
    train = torch.arange(40)
    z = standardize_by_train(torch.as_tensor(x), train).numpy()
    np.testing.assert_allclose(z[:40].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:40].std(axis=0), [1.0, 0.0, 1.0, 1.0], atol=1e-5)
    assert (z[:, 1] == 0).all() and z[40:, 2].min() > 20  # val/test keep the train scale
    stacked = standardize_by_train(torch.as_tensor(np.stack([x, 2 * x])), train)
    np.testing.assert_allclose(stacked[1].numpy(), z, atol=1e-5)


def test_macro_f1_and_accuracy_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=60)
    predicted = np.where(rng.random((3, 60)) < 0.6, truth, rng.integers(0, 5, size=(3, 60)))
    predicted[2] = np.where(predicted[2] == 4, 0, predicted[2])  # a class never predicted
    f1, accuracy = _metrics(torch.as_tensor(predicted), torch.as_tensor(truth), 5)
    for row in range(3):
        assert f1[row].item() == pytest.approx(
            f1_score(truth, predicted[row], average="macro"), abs=1e-12
        )
        assert accuracy[row].item() == pytest.approx(np.mean(truth == predicted[row]), abs=1e-12)


# ----------------------------------------------------------------------------- naive == vectorised


def test_vectorised_equals_naive_for_the_same_seed() -> None:
    # Four sets of one dimension (two per worker slot: refill and compaction), one of another.
    y, sets = _problem(160, [(24, 0.25), (24, 0.8), (24, 0.0), (24, 0.45), (7, 1.0)])
    config = ProbeArgs(seeds=3, **CPU).to_config()
    split = stratified_split(y, config.split, config.split_seed)
    results = train_probes(sets, y, split, config=config, cells_per_worker=2)
    assert results.f1_macro.shape == (5, 3)
    for i, x in enumerate(sets):
        for seed in range(3):
            naive = train_probe_naive(x, y, split, seed=seed, config=config)
            batched = results.outcome(i, seed)
            assert (batched.epochs, batched.f1_macro, batched.accuracy) == (
                naive.epochs,
                naive.f1_macro,
                naive.accuracy,
            ), (i, seed)
            assert batched.val_loss == pytest.approx(naive.val_loss, abs=1e-5)
            assert (batched.best_epoch, batched.f1_macro_best) == (
                naive.best_epoch,
                naive.f1_macro_best,
            ), (i, seed)
            assert batched.val_loss_best == pytest.approx(naive.val_loss_best, abs=1e-5)
    assert (results.best_epoch < results.epochs).all()  # stopped after `patience` epochs
    # Probes of one cell stopped at different epochs, so freezing by masks was exercised.
    assert any(len(set(row)) > 1 for row in results.epochs.tolist())


def test_results_do_not_depend_on_stacking_or_threads() -> None:
    y, sets = _problem(120, [(16, 0.5)] * 5, seed=1)
    config = ProbeArgs(seeds=2, **CPU).to_config()
    split = stratified_split(y, config.split, 0)
    one = train_probes(sets, y, split, config=config, cells_per_worker=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        many = train_probes(sets, y, split, config=config, cells_per_worker=3)
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    np.testing.assert_array_equal(one.epochs, many.epochs)
    np.testing.assert_array_equal(one.f1_macro, many.f1_macro)
    np.testing.assert_allclose(one.val_loss, many.val_loss, atol=1e-6)


# ----------------------------------------------------------------------------- behaviour


def test_separable_reaches_f1_one_and_random_labels_stay_near_chance() -> None:
    y, (separable, noise) = _problem(480, [(12, 4.0), (12, 0.0)], classes=4, seed=2)
    config = ProbeArgs(seeds=3, **CPU).to_config()
    split = stratified_split(y, config.split, 0)
    results = train_probes([separable, noise], y, split, config=config)
    assert results.f1_macro[0].min() > 0.97 and results.accuracy[0].min() > 0.97
    assert abs(results.f1_macro[1].mean() - 0.25) < 0.12
    assert results.val_loss[1].min() > 1.2  # ~ln 4 = 1.39 for no signal


def test_early_stopping_follows_patience_min_delta_and_max_epochs() -> None:
    y, sets = _problem(120, [(10, 0.5), (10, 0.0)], seed=3)
    split = stratified_split(y, (0.8, 0.1, 0.1), 0)
    # No epoch can improve by 100 nats after the first: stop after exactly 1 + patience epochs.
    strict = ProbeArgs(seeds=2, min_delta=100.0, patience=3, **CPU).to_config()
    assert (train_probes(sets, y, split, config=strict).epochs == 4).all()
    assert train_probe_naive(sets[0], y, split, seed=0, config=strict).epochs == 4
    capped = ProbeArgs(seeds=2, min_delta=0.0, patience=50, max_epochs=3, **CPU).to_config()
    assert (train_probes(sets, y, split, config=capped).epochs == 3).all()
    default = ProbeArgs(seeds=2, **CPU).to_config()
    epochs = train_probes(sets, y, split, config=default).epochs
    assert (epochs >= 1 + default.patience).all() and (epochs < 60).all()


def test_trainer_rejects_bad_inputs() -> None:
    y, (x,) = _problem(60, [(5, 1.0)])
    config = ProbeArgs(seeds=1, **CPU).to_config()
    split = stratified_split(y, config.split, 0)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InvalidInputError) as caught:
        train_probes([x, x[:-1], bad], y, split, config=config)
    assert [c for c, _ in caught.value.problems] == ["feature set 1", "feature set 2"]
    overlapping = (split[0], split[0][:3], split[2])
    with pytest.raises(InvalidInputError, match="overlap"):
        train_probe_naive(x, y, overlapping, seed=0, config=config)
    if not torch.cuda.is_available():
        with pytest.raises(InvalidConfigError, match="cuda"):
            train_probes([x], y, split, config=ProbeArgs(device="cuda").to_config())


# ----------------------------------------------------------------------------- config and service


def test_args_defaults_are_the_papers_and_unknown_keys_are_rejected() -> None:
    config = ProbeArgs().to_config()
    assert (
        config.seeds,
        config.batch_size,
        config.lr,
        config.max_epochs,
        config.patience,
        config.min_delta,
        config.split,
    ) == (10, 16, 1e-2, 1000, 5, 0.025, (0.8, 0.1, 0.1))
    with pytest.raises(pydantic.ValidationError):
        ProbeArgs(learning_rate=0.1)
    with pytest.raises(pydantic.ValidationError):
        ProbeArgs(split=(0.5, 0.3, 0.3))
    with pytest.raises(pydantic.ValidationError):
        ProbeArgs(device="tpu")


def _service_cells(n: int = 96) -> tuple[dict, list[str]]:
    rng = np.random.default_rng(4)
    labels = [EMOTIONS[i % 4] for i in range(n)]
    codes = np.array([EMOTIONS.index(label) for label in labels])
    cells = {}
    for step in (50, 0):
        for layer in (1, 0):
            means = rng.normal(size=(6, 12)) * (0.3 + layer + step / 50)
            cells[("embeddings", step, layer)] = means[codes] + rng.normal(size=(n, 12))
    cells[("egemaps", None, None)] = rng.normal(size=(n, 8)) + rng.normal(size=(6, 8))[codes] * 0.5
    return cells, labels


def _columns(spec) -> set[str]:
    return set(spec.schema.names) - {"train_key"} - {f.name for f in LINEAGE_FIELDS}


def test_service_rows_follow_the_probes_table() -> None:
    cells, labels = _service_cells()
    config = ProbeArgs(seeds=2, protocol="paper", **CPU).to_config()
    rows = ProbeService(config=config).process(cells, labels)["probes"]
    assert all(set(row) == _columns(PROBES) for row in rows)
    assert len(rows) == 5 * 2 * 2  # cells x weights x seeds
    assert [(r["features"], r["checkpoint_step"], r["layer"], r["weights"], r["seed"])
            for r in rows[:3]] == [
        ("egemaps", None, None, "best", 0),
        ("egemaps", None, None, "best", 1),
        ("embeddings", 0, 0, "best", 0),
    ]
    assert {r["protocol"] for r in rows} == {"paper"} and {r["n_clips"] for r in rows} == {8}  # 2 test clips per class
    assert all(0 <= r["f1_macro"] <= 1 and r["epochs"] >= 6 and r["val_loss"] > 0 for r in rows)
    f1 = {
        (r["checkpoint_step"], r["layer"]): r["f1_macro"]
        for r in rows
        if r["features"] == "embeddings" and r["weights"] == "best"
    }
    assert f1[(50, 1)] > f1[(0, 0)]  # more class signal, better probe


def test_grouped_cv_service_scores_every_clip_once_and_fills_every_table() -> None:
    cells, labels = _service_cells(120)
    speakers = [f"s{i % 12}" for i in range(120)]
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(120, 3))
    classifier = np.array([EMOTIONS.index(label) for label in labels])
    classifier[:3] = -1  # a label the analysis clips do not have counts against the true class
    config = ProbeArgs(seeds=2, mlp=True, mlp_hidden=8, folds=3, **CPU).to_config()
    out = ProbeService(config=config).process(
        cells, labels, speakers=speakers, targets=targets, target_names=["a", "b", "c"],
        classifier=classifier,
    )
    for table, spec in (("probes", PROBES), ("probe_features", PROBE_FEATURES),
                        ("probe_classes", PROBE_CLASSES), ("probe_confusion", PROBE_CONFUSION)):
        assert out[table] and all(set(row) == _columns(spec) for row in out[table]), table
    probes = out["probes"]
    assert {r["n_clips"] for r in probes} == {120}  # every clip predicted exactly once
    assert {(r["head"], r["task"]) for r in probes} == {
        ("linear", "emotion"), ("mlp", "emotion"), ("mlp", "control")
    }
    assert all(r["f1_low"] <= r["f1_macro_cell"] <= r["f1_high"] for r in probes)
    assert all("jackknife" in r["interval"] for r in probes)
    assert len(out["probe_features"]) == 4 * 3  # embedding cells x targets
    mine = [r for r in out["probe_classes"] if r["source"] == "classifier"]
    assert min(r["f1"] for r in mine) < 1.0 and max(r["f1"] for r in mine) == 1.0
    assert sum(r["chance_f1"] for r in mine) == 1.0
    confusion = [r for r in out["probe_confusion"] if r["source"] == "classifier"]
    assert sum(r["count"] for r in confusion) == 120
    assert sum(r["count"] for r in confusion if r["predicted_label"] == "other") == 3


def test_service_names_bad_cells_and_small_classes() -> None:
    cells, labels = _service_cells()
    service = ProbeService(config=ProbeArgs(seeds=1, protocol="paper", **CPU).to_config())
    broken = dict(cells)
    broken[("embeddings", 0, 1)] = cells[("embeddings", 0, 1)][:-2]
    broken[("egemaps", None, None)] = np.where(
        np.arange(96)[:, None] == 5, np.nan, cells[("egemaps", None, None)]
    )
    with pytest.raises(InvalidInputError) as caught:
        service.process(broken, labels)
    assert [c for c, _ in caught.value.problems] == [
        "egemaps",
        "embeddings (checkpoint 0, layer 1)",
    ]
    with pytest.raises(InvalidInputError, match="expected"):
        service.process({("embeddings", None, 3): cells[("egemaps", None, None)]}, labels)
    few = labels[:-2] + ["SAD", "SAD"]
    with pytest.raises(InvalidInputError, match="class 'SAD'"):
        service.process(cells, few)
