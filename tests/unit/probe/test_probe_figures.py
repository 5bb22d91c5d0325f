"""The probe figures and report section, drawn from real ProbeService output."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from serlens.probe import ProbeArgs, ProbeService
from serlens.probe.figures import plot_probe_f1
from serlens.probe.report import probe_section, write_probe_figures
from serlens.shared.errors import InvalidInputError
from serlens.shared.schema import EMOTIONS, egemaps_feature_names


@pytest.fixture(scope="module")
def tables() -> dict[str, list[dict]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 120
    labels = [EMOTIONS[i % 4] for i in range(n)]
    codes = np.array([EMOTIONS.index(label) for label in labels])
    speakers = [f"s{i % 10}" for i in range(n)]
    names = [egemaps_feature_names()[j] for j in (0, 10, 30, 60, 84)]
    targets = rng.normal(size=(n, 5))
    cells = {}
    for step in (0, 50):
        for layer in (0, 1, 2):
            means = rng.normal(size=(6, 12)) * (0.3 + layer)
            cells[("embeddings", step, layer)] = (
                means[codes] + rng.normal(size=(n, 12)) + targets @ rng.normal(size=(5, 12))
            )
    cells[("egemaps", None, None)] = targets
    config = ProbeArgs(seeds=2, folds=3, device="cpu").to_config()
    out = ProbeService(config=config).process(
        cells, labels, speakers=speakers, targets=targets, target_names=names, classifier=codes
    )
    torch.set_num_threads(threads)
    return out


def test_probe_figure_has_checkpoint_lines_interval_baseline_and_chance(tables, tmp_path: Path) -> None:
    png, svg = plot_probe_f1(tables["probes"], tmp_path / "out" / "probes")
    assert (png.name, svg.name) == ("probes.png", "probes.svg")
    image = matplotlib.image.imread(png)
    assert image.shape[1] > 600 and image[..., :3].std() > 0.05
    labels = {t.strip() for t in re.findall(r">([^<>]+)</text>", svg.read_text())}
    assert {"hidden state (0 = CNN projection + positional conv.)", "chance (1/4)", "0", "50"} <= labels
    assert any(label.startswith("speaker jackknife 95%") for label in labels)
    assert any(label.startswith("eGeMAPS (") for label in labels)
    assert any("best-validation weights" in label for label in labels)
    assert any("(grouped_cv)" in label for label in labels)


def test_probe_figure_needs_embedding_rows(tables, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no embedding"):
        plot_probe_f1([r for r in tables["probes"] if r["features"] == "egemaps"], tmp_path / "x")


def test_every_probe_figure_and_the_section(tables, tmp_path: Path) -> None:
    paths = write_probe_figures(tables, tmp_path)
    assert {p.name for p in paths} >= {
        "probe_f1.png", "probe_feature_r2.png", "probe_feature_r2_change.png", "probe_confusion.png"
    }
    section = probe_section(
        tables, tmp_path,
        table=lambda header, rows, **_: f"<table>{len(rows)}:{','.join(header)}</table>",
        figure=lambda path, caption: f"<figure>{path.name}</figure>",
    )
    for needle in ("grouped_cv", "speaker jackknife", "Chance is 1/4", "probe_feature_r2.png",
                   "stop-epoch", "Eyben", "held-out", "eGeMAPS group"):
        assert needle in section, needle
