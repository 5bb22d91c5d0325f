"""What the probes decode, in detail: eGeMAPS group R² by layer, its change, confusions.

The figures: R² of the eGeMAPS parameter groups by layer, its change from the pretrained model,
and confusion matrices.

Drawn on ``matplotlib.figure.Figure`` objects (no pyplot); written as PNG and SVG.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from serlens.egemaps.groups import GROUPS
from serlens.shared.errors import InvalidInputError
from serlens.shared.figures import save_figure


def group_r2(rows: Sequence[Mapping[str, Any]], column: str = "r2") -> dict[int, np.ndarray]:
    """Mean of ``column`` over the features of each group: step -> [groups, layers] array.

    Raises:
        InvalidInputError: no rows.
    """
    if not rows:
        raise InvalidInputError([("rows", "no per-feature probe rows")], source="probe figure")
    layers = sorted({int(r["layer"]) for r in rows})
    values: dict[tuple[int, str, int], list[float]] = defaultdict(list)
    for r in rows:
        values[(int(r["checkpoint_step"]), r["target_group"], int(r["layer"]))].append(float(r[column]))
    steps = sorted({key[0] for key in values})
    return {
        step: np.array([[np.mean(values[(step, g, layer)]) if values[(step, g, layer)] else np.nan
                         for layer in layers] for g in GROUPS])
        for step in steps
    }


def _panels(grids: Mapping[int, np.ndarray], layers: list[int], stem: Path, *, title: str,
            label: str, cmap: str, limits: tuple[float, float],
            nulls: Mapping[int, np.ndarray] | None = None) -> list[Path]:
    steps = sorted(grids)
    fig = Figure(figsize=(max(7.0, 2.2 + 0.28 * len(layers) * len(steps)), 3.2), layout="constrained")
    axes = fig.subplots(1, len(steps), squeeze=False)[0]
    image = None
    for ax, step in zip(axes, steps, strict=True):
        image = ax.imshow(grids[step], aspect="auto", cmap=cmap, vmin=limits[0], vmax=limits[1])
        null = f"\ncontrol R² ≤ {np.nanmax(nulls[step]):.3f}" if nulls is not None else ""
        ax.set_title(f"checkpoint {step}{null}", fontsize=9)
        ax.set_xticks(range(len(layers)), labels=[str(x) for x in layers], fontsize=7)
        ax.set_xlabel("layer")
        ax.set_yticks(range(len(GROUPS)), labels=list(GROUPS) if ax is axes[0] else [""] * len(GROUPS))
    if image is not None:
        fig.colorbar(image, ax=list(axes), label=label, fraction=0.03)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, stem)


def plot_feature_r2(rows: Sequence[Mapping[str, Any]], stem: Path) -> list[Path]:
    """Out-of-fold ridge R² by eGeMAPS group (rows) and layer (columns), one panel per checkpoint.

    Args:
        rows: ``probe_features`` rows.
        stem: output path without suffix.

    Returns:
        ``[stem.png, stem.svg]``.

    Raises:
        InvalidInputError: no rows.
    """
    grids = group_r2(rows)
    layers = sorted({int(r["layer"]) for r in rows})
    # The null beside the values: the same probes on targets permuted within the folds.
    return _panels(grids, layers, stem, cmap="viridis", limits=(0.0, 1.0),
                   label="mean R² over the group's features", nulls=group_r2(rows, "r2_control"),
                   title="eGeMAPS group R² by layer (ridge, speaker-grouped CV)\n"
                         "control: the same probes on targets permuted within folds")


def plot_feature_r2_change(rows: Sequence[Mapping[str, Any]], stem: Path) -> list[Path]:
    """Change of group R² from the first checkpoint (the pretrained model), per later checkpoint.

    Raises:
        InvalidInputError: no rows, or a single checkpoint.
    """
    grids = group_r2(rows)
    steps = sorted(grids)
    if len(steps) < 2:
        raise InvalidInputError([("rows", "one checkpoint: no change to show")], source="probe figure")
    change = {step: grids[step] - grids[steps[0]] for step in steps[1:]}
    bound = max(0.05, float(np.nanmax(np.abs(np.stack(list(change.values()))))))
    layers = sorted({int(r["layer"]) for r in rows})
    return _panels(change, layers, stem, cmap="RdBu", limits=(-bound, bound),
                   label=f"R² minus R² at checkpoint {steps[0]}",
                   title="Change of eGeMAPS group R² with fine-tuning")


def plot_confusions(rows: Sequence[Mapping[str, Any]], stem: Path) -> list[Path]:
    """Row-normalised confusion matrices, one panel per source (``probe_confusion`` rows).

    Raises:
        InvalidInputError: no rows.
    """
    if not rows:
        raise InvalidInputError([("rows", "no confusion rows")], source="probe figure")
    sources = list(dict.fromkeys(r["source"] for r in rows))
    labels = list(dict.fromkeys(r["true_label"] for r in rows))
    columns = list(dict.fromkeys([*labels, *(r["predicted_label"] for r in rows)]))  # + "other"
    fig = Figure(figsize=(3.2 * len(sources) + 0.8, 3.4), layout="constrained")
    axes = fig.subplots(1, len(sources), squeeze=False)[0]
    image = None
    for ax, source in zip(axes, sources, strict=True):
        counts = np.zeros((len(labels), len(columns)))
        for r in rows:
            if r["source"] == source:
                counts[labels.index(r["true_label"]), columns.index(r["predicted_label"])] += r["count"]
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(share):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 else "black")
        ax.set_xticks(range(len(columns)), labels=columns, fontsize=7)
        ax.set_yticks(range(len(labels)), labels=labels, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(source.replace("_", " "), fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="share of the true class", fraction=0.03)
    return save_figure(fig, stem)
