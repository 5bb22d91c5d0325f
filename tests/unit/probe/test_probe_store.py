"""The probe tables go through the real feature store and come back as the report reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from serlens.probe import ProbeArgs, ProbeService
from serlens.probe.report import probe_section, read_probe_tables, write_probe_figures
from serlens.shared.schema import EMOTIONS, egemaps_feature_names
from serlens.shared.store import FeatureStore


def test_probe_rows_round_trip_through_the_store(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(0)
        n = 90
        labels = [EMOTIONS[i % 3] for i in range(n)]
        codes = np.array([EMOTIONS.index(label) for label in labels])
        speakers = [f"s{i % 6}" for i in range(n)]
        targets = rng.normal(size=(n, 88))
        cells = {("embeddings", step, layer): rng.normal(size=(n, 10)) + codes[:, None] * layer
                 for step in (0, 10) for layer in (0, 1)}
        cells[("egemaps", None, None)] = targets
        config = ProbeArgs(seeds=2, folds=3, device="cpu").to_config()
        tables = ProbeService(config=config).process(
            cells, labels, speakers=speakers, targets=targets, target_names=egemaps_feature_names(),
            classifier=codes,
        )
    finally:
        torch.set_num_threads(threads)
    store = FeatureStore(tmp_path / "store").init()
    for name, rows in tables.items():
        store.write(name, [{**r, "train_key": "t"} for r in rows], config_hash="analysis")
    store.refresh_views()
    back = read_probe_tables(store, "analysis")
    assert {name: len(rows) for name, rows in back.items()} == {
        name: len(rows) for name, rows in tables.items()
    }
    assert len(back["probe_features"]) == 4 * 88
    assert {r["target_group"] for r in back["probe_features"]} == {
        "frequency", "energy/amplitude", "spectral balance", "temporal"
    }
    assert write_probe_figures(back, tmp_path / "figures")
    html = probe_section(back, tmp_path / "figures", table=lambda h, r, **_: "<table/>",
                         figure=lambda p, c: f"<img {p.name}>")
    assert "probe_confusion.png" in html and "grouped_cv" in html
