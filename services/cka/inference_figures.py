"""Figures that show CKA with its null and uncertainty: significance, changes, drift.

- ``plot_cka_significance``: debiased CKA as the headline heatmap, cells not distinguishable
  from the null greyed and hatched (the legend names the test and the q threshold); linear CKA
  beside it with its analytic null mean written in each cell; one colour scale over both
  panels (or [0, 1]), stated in the title.
- ``plot_cka_changes``: the change in CKA with eGeMAPS against checkpoint 0, per layer, over
  fine-tuning steps, speaker-jackknife intervals shaded.
- ``plot_cka_drift``: CKA of each cell with the same layer at checkpoint 0, and the layer x
  layer matrices of the first and last checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from serlens.cka.figures import HIDDEN_STATE_LABEL, display_name, draw_heatmap, grid_of, shared_norm
from serlens.shared.errors import InvalidInputError
from serlens.shared.figures import save_figure

Rows = Sequence[Mapping[str, Any]]

_SCHEME_NAMES = {"within_speaker": "within-speaker permutation", "plain": "permutation"}


def _test_name(rows: Rows) -> str:
    first = rows[0]
    scheme = _SCHEME_NAMES.get(str(first.get("permutation_scheme")), str(first.get("permutation_scheme")))
    return f"{scheme} test, m = {int(first.get('permutations') or 0):,}, BH over the grid"


def plot_cka_significance(rows: Rows, stem: Path, *, q_threshold: float = 0.05, unit_scale: bool = False) -> list[Path]:
    """Debiased CKA (headline, non-significant cells hatched) beside linear CKA and its null.

    Args:
        rows: the ``cka`` rows of one reference, both estimators, with ``q_value`` and
            ``null_mean``.
        stem: output path without suffix (PNG and SVG are written).
        q_threshold: cells with ``q_value >= q_threshold`` are marked.
        unit_scale: fix the shared colour scale at [0, 1] instead of the data's range.

    Returns:
        The paths written.

    Raises:
        InvalidInputError: an estimator without rows, or rows of several references.
    """
    steps, layers, debiased, reference = grid_of(rows, "debiased")
    _, _, q_debiased, _ = grid_of(rows, "debiased", "q_value")
    _, _, linear, _ = grid_of(rows, "linear")
    _, _, null_linear, _ = grid_of(rows, "linear", "null_mean")
    _, _, q_linear, _ = grid_of(rows, "linear", "q_value")
    reference = display_name(reference)
    norm = shared_norm(debiased, linear, unit=unit_scale)
    scale = "colour scale fixed at [0, 1]" if unit_scale else "one colour scale shared by both panels"
    cell = 0.62
    width = max(5.0, 1.9 + cell * len(layers))
    fig = Figure(figsize=(2 * width, max(3.2, 1.9 + 0.42 * len(steps))), layout="constrained")
    left, right = fig.subplots(1, 2)
    not_significant = ~(q_debiased < q_threshold)
    draw_heatmap(fig, left, steps, layers, debiased, colorbar_label=f"debiased CKA with {reference}",
                 title="Debiased CKA (0 under independence)", cell_width=cell, norm=norm,
                 hatch=not_significant)
    texts = np.vectorize(lambda v, m: f"{v:.3f}\n({m:.3f})")(linear, null_linear)
    draw_heatmap(fig, right, steps, layers, linear, colorbar_label=f"linear CKA with {reference}",
                 title="Linear CKA (null mean in brackets)", cell_width=cell * 0.8, norm=norm,
                 hatch=~(q_linear < q_threshold), texts=texts)
    fig.legend(handles=[Patch(facecolor="white", edgecolor="#555", hatch="///",
                              label=f"q ≥ {q_threshold:g}: not distinguishable from the null ({_test_name(rows)})")],
               loc="outside lower center", frameon=False, fontsize=8)
    fig.suptitle(f"CKA of the embeddings with {reference}; {scale}")
    return save_figure(fig, stem)


def plot_cka_changes(changes: Rows, stem: Path, *, estimator: str = "debiased") -> list[Path]:
    """Change in CKA against checkpoint 0 over fine-tuning steps, one line per layer, CIs shaded.

    Args:
        changes: ``cka_changes`` rows (baseline ``step0`` is drawn).
        stem: output path without suffix.
        estimator: which estimator's changes to draw.

    Returns:
        The paths written.

    Raises:
        InvalidInputError: no ``step0`` changes of ``estimator``.
    """
    chosen = [r for r in changes if r["baseline"] == "step0" and r["estimator"] == estimator]
    if not chosen:
        raise InvalidInputError([("changes", f"no step0 changes of the {estimator} estimator")],
                                source="CKA change figure")
    layers = sorted({int(r["layer"]) for r in chosen})
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for k, layer in enumerate(layers):
        own = sorted((r for r in chosen if int(r["layer"]) == layer), key=lambda r: r["checkpoint_step"])
        base = own[0]["baseline_step"]
        x = [base] + [r["checkpoint_step"] for r in own]
        colour = cmap(k / max(1, len(layers) - 1))
        ax.plot(x, [0.0] + [r["difference"] for r in own], color=colour, lw=1.2, label=f"{layer}")
        ax.fill_between(x, [0.0] + [r["ci_low"] for r in own], [0.0] + [r["ci_high"] for r in own],
                        color=colour, alpha=0.12, lw=0)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(f"{estimator} CKA(step) − CKA(step {chosen[0]['baseline_step']})")
    ax.set_title("Change in CKA with eGeMAPS; shaded: 95 % delete-one-speaker jackknife CI")
    ax.legend(title="hidden state", fontsize=7, ncols=2 if len(layers) > 12 else 1, frameon=False,
              loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, stem)


def plot_cka_drift(drift: Rows, layer_rows: Rows, stem: Path, *, estimator: str = "debiased") -> list[Path]:
    """Drift heatmap (CKA with checkpoint 0, same layer) and first/last layer x layer matrices.

    Args:
        drift: ``cka_drift`` rows.
        layer_rows: ``cka_layers`` rows.
        stem: output path without suffix.
        estimator: which estimator to draw.

    Returns:
        The paths written.

    Raises:
        InvalidInputError: no drift rows of ``estimator`` against step 0.
    """
    against = [{**r, "reference": "checkpoint 0"} for r in drift
               if r["against"] == "step0" and r["estimator"] == estimator]
    if not against:
        raise InvalidInputError([("drift", f"no step0 drift of the {estimator} estimator")],
                                source="CKA drift figure")
    steps, layers, values, _ = grid_of(against, estimator)
    floor = [r["value"] for r in drift if r["against"] == "reembed" and r["estimator"] == estimator]
    chosen = [r for r in layer_rows if r["estimator"] == estimator]
    ends = [s for s in (steps[0], steps[-1]) if any(r["checkpoint_step"] == s for r in chosen)]
    fig = Figure(figsize=(6.0 * (1 + len(set(ends))), max(4.0, 1.6 + 0.42 * len(steps))), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 1 + len(set(ends))))
    floor_text = f"; re-embedding floor {min(floor):.6f}" if floor else ""
    draw_heatmap(fig, axes[0], steps, layers, values, colorbar_label=f"{estimator} CKA with step 0",
                 title=f"Drift from checkpoint 0{floor_text}", cell_width=0.3, norm=shared_norm(values))
    for ax, step in zip(axes[1:], sorted(set(ends)), strict=True):
        own = [r for r in chosen if r["checkpoint_step"] == step]
        names = sorted({int(r["layer_a"]) for r in own})
        matrix = np.full((len(names), len(names)), np.nan)
        for r in own:
            matrix[names.index(int(r["layer_a"])), names.index(int(r["layer_b"]))] = r["value"]
        draw_heatmap(fig, ax, names, names, matrix, colorbar_label=f"{estimator} CKA",
                     title=f"Layer x layer, step {step}", cell_width=0.3, norm=shared_norm(matrix, unit=True),
                     ylabel=HIDDEN_STATE_LABEL)
    return save_figure(fig, stem)
