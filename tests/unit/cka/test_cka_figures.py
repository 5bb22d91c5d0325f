"""Figure 1: the CKA heatmap and the linear/debiased panels."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from serlens.cka.figures import HIDDEN_STATE_LABEL, plot_cka_heatmap, plot_cka_panels
from serlens.shared.errors import InvalidInputError


def _rows(steps=(0, 50, 100), layers=range(4)) -> list[dict]:
    return [
        {
            "checkpoint_step": s,
            "layer": layer,
            "reference": "egemaps",
            "estimator": e,
            "value": 0.04 - 0.005 * layer - 0.0001 * s + (0.0 if e == "linear" else -0.01),
            "n_clips": 40,
        }
        for s in steps
        for layer in layers
        for e in ("linear", "debiased")
    ]


def _svg_texts(path: Path) -> list[str]:
    return [t.strip() for t in re.findall(r">([^<>]+)</text>", path.read_text()) if t.strip()]


def test_heatmap_writes_png_and_svg_with_labels_and_values(tmp_path: Path) -> None:
    paths = plot_cka_heatmap(_rows(), tmp_path / "figs" / "cka_linear")
    assert [p.name for p in paths] == ["cka_linear.png", "cka_linear.svg"]
    image = matplotlib.image.imread(paths[0])
    assert image.shape[0] > 200 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # something was drawn
    texts = _svg_texts(paths[1])
    assert HIDDEN_STATE_LABEL in texts and "fine-tuning step" in texts
    assert "linear CKA with eGeMAPS" in texts
    assert "0.040" in texts and "0.015" in texts  # annotated cells: best and worst
    assert {"0", "50", "100", "3"} <= set(texts)  # step and layer tick labels


def test_heatmap_rows_run_from_first_step_at_the_top(tmp_path: Path) -> None:
    # One bright cell at (step 0, layer 3): top-right corner of the image.
    rows = [
        dict(r, value=1.0 if (r["checkpoint_step"], r["layer"]) == (0, 3) else 0.0)
        for r in _rows()
        if r["estimator"] == "linear"
    ]
    png, _ = plot_cka_heatmap(rows, tmp_path / "one", title="orientation")
    image = matplotlib.image.imread(png)[..., :3]
    yellow = (image[..., 0] > 0.8) & (image[..., 1] > 0.8) & (image[..., 2] < 0.3)
    rows_hit, cols_hit = np.nonzero(yellow)
    assert rows_hit.size > 100
    assert rows_hit.mean() < image.shape[0] * 0.45  # upper part
    assert cols_hit.mean() > image.shape[1] * 0.5  # right part


def test_panels_and_errors(tmp_path: Path) -> None:
    png, svg = plot_cka_panels(_rows(), tmp_path / "panels")
    assert png.exists() and svg.exists()
    texts = _svg_texts(svg)
    assert "linear CKA" in texts and "debiased CKA" in texts
    with pytest.raises(InvalidInputError, match="no 'debiased' CKA rows"):
        plot_cka_heatmap(
            [r for r in _rows() if r["estimator"] == "linear"], tmp_path / "x", estimator="debiased"
        )
    mixed = _rows() + [dict(_rows()[0], reference="mfcc")]
    with pytest.raises(InvalidInputError, match="several references"):
        plot_cka_heatmap(mixed, tmp_path / "y")
