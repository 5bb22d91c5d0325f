"""Figure 2: macro-F1 by layer, one line per checkpoint, eGeMAPS baseline and chance."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from serlens.probe.figures import plot_probe_f1
from serlens.shared.errors import InvalidInputError


def _rows() -> list[dict]:
    rng = np.random.default_rng(0)
    rows = [
        {
            "features": "embeddings",
            "checkpoint_step": step,
            "layer": layer,
            "seed": seed,
            "f1_macro": 0.3 + 0.02 * layer + 0.001 * step + 0.01 * rng.normal(),
            "accuracy": 0.5,
            "epochs": 7,
            "val_loss": 1.2,
        }
        for step in (0, 50, 100)
        for layer in range(5)
        for seed in range(3)
    ]
    rows += [
        {
            "features": "egemaps",
            "checkpoint_step": None,
            "layer": None,
            "seed": seed,
            "f1_macro": 0.28 + 0.01 * seed,
            "accuracy": 0.4,
            "epochs": 6,
            "val_loss": 1.4,
        }
        for seed in range(3)
    ]
    return rows


def test_probe_figure_has_checkpoint_lines_baseline_and_chance(tmp_path: Path) -> None:
    png, svg = plot_probe_f1(_rows(), tmp_path / "out" / "probes")
    assert (png.name, svg.name) == ("probes.png", "probes.svg")
    image = matplotlib.image.imread(png)
    assert image.shape[1] > 800 and image[..., :3].std() > 0.05
    text = svg.read_text()
    labels = {t.strip() for t in re.findall(r">([^<>]+)</text>", text)}
    assert {
        "transformer layer",
        "chance (1/6)",
        "eGeMAPS (0.290 ± 0.008)",
        "0",
        "50",
        "100",
    } <= labels
    assert any(label.startswith("test macro-F1 (mean over 3 seeds") for label in labels)
    # First checkpoint blue, last red.
    assert "#1f5fbf" in text and "#d62728" in text


def test_probe_figure_needs_embedding_rows(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no embedding"):
        plot_probe_f1([r for r in _rows() if r["features"] == "egemaps"], tmp_path / "x")
    png, _ = plot_probe_f1(
        [r for r in _rows() if r["features"] == "embeddings"],
        tmp_path / "y",
        title="no baseline",
        num_classes=4,
    )
    assert png.exists()
