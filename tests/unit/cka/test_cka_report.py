"""The CKA figures (significance, changes, drift) and the report section, from real tables."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from serlens.cka import CkaArgs, CkaService
from serlens.cka.report import cka_section, write_cka_figures
from serlens.pipeline.stages import write_tables
from serlens.shared.store import FeatureStore


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    rng = np.random.default_rng(1)
    speaker_index = np.repeat(np.arange(6), 6)
    labels = np.array([f"s{i}" for i in speaker_index])
    reference = rng.normal(size=(6, 5))[speaker_index] + rng.normal(size=(36, 5))
    cells = {(step, layer): (reference @ rng.normal(size=(5, 8)) * (layer == 0) / (1 + step)
                             + rng.normal(size=(36, 8))) for step in (0, 10, 20) for layer in range(3)}
    tables = CkaService(config=CkaArgs(permutations=99).to_config()).analyse(
        cells, reference, speakers=list(labels), confounds={"speaker": list(labels)},
        reembedded={layer: cells[(0, layer)] for layer in range(3)})
    feature_store = FeatureStore(tmp_path_factory.mktemp("store"))
    write_tables(feature_store, tables.by_table(), train_key="t", config_hash="a")
    return feature_store


def _texts(path: Path) -> str:
    return " ".join(t.strip() for t in re.findall(r">([^<>]+)</text>", path.read_text()))


def test_figures_name_the_test_the_threshold_and_the_scale(store, tmp_path):
    paths = write_cka_figures(store, tmp_path, analysis_key="a")
    assert {p.name for p in paths} >= {"cka_significance.png", "cka_changes.svg", "cka_drift.png", "cka_egemaps.png"}
    significance = _texts(tmp_path / "cka_significance.svg")
    assert "within-speaker permutation test, m = 99" in significance and "q ≥ 0.05" in significance
    assert "one colour scale shared by both panels" in significance
    assert "jackknife" in _texts(tmp_path / "cka_changes.svg")
    assert "re-embedding floor 1.000000" in _texts(tmp_path / "cka_drift.svg")
    unit = write_cka_figures(store, tmp_path / "unit", analysis_key="a",
                             config=CkaArgs(colour_scale="unit", q_threshold=0.1).to_config())
    assert "colour scale fixed at [0, 1]" in _texts(unit[3]) and "q ≥ 0.1" in _texts(unit[3])


def test_section_explains_and_shows_everything(store, tmp_path):
    write_cka_figures(store, tmp_path, analysis_key="a")
    shown: list[str] = []
    html = cka_section(store, {"analysis_key": "a", "config_yaml": "cka:\n  q_threshold: 0.05\n"}, tmp_path,
                       table=lambda header, rows, **_: f"<table>{len(rows)}</table>",
                       figure=lambda path, caption: shown.append(path.name) or f"<figure>{caption}</figure>")
    assert shown == ["cka_significance.png", "cka_egemaps.png", "cka_changes.png", "cka_drift.png"]
    assert "<table>3</table>" in html and "null mean" in html and "do not say" in html
    assert "Effective rank of eGeMAPS" in html
    assert "within-speaker permutations (m = 99)" in html and "jackknife over 6 speakers" in html
    assert cka_section(store, {"analysis_key": "none", "config_yaml": None}, tmp_path, table=str, figure=str) == ""
