"""The paper's Figure 2 with honest bands, and the per-feature and per-class probe figures.

Drawn on ``matplotlib.figure.Figure`` objects (no pyplot, no global state); written as PNG and
SVG (text kept as text).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from serlens.shared.errors import InvalidInputError
from serlens.shared.figures import HIDDEN_STATE_LABEL, save_figure

#: First checkpoint blue, last red (the paper's colouring), through purple.
CHECKPOINT_CMAP = LinearSegmentedColormap.from_list(
    "checkpoints", ["#1f5fbf", "#7b3fa0", "#d62728"]
)


def _select(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows the figure shows: linear probes, emotion task, best-validation weights.

    One seed's rows suffice: the cell's statistics repeat on every seed's row.
    """
    return [r for r in rows if r.get("head", "linear") == "linear" and r.get("task", "emotion") == "emotion"
            and r.get("weights", "best") == "best" and r["seed"] == min(x["seed"] for x in rows)]


def _reference_lines(
    ax: Any,
    baseline: tuple[float, float, float] | None,
    num_classes: int,
    interval: str,
    limits: tuple[float, float],
) -> tuple[float, float]:
    """The eGeMAPS line with its band, chance, and the legend; returns the widened y limits."""
    lowest, highest = limits
    handles: list[tuple[Any, str]] = []
    if baseline is not None:
        mean, low, high = baseline
        ax.axhspan(low, high, color="0.35", alpha=0.12, linewidth=0)
        ax.axhline(mean, color="0.15", linestyle="--", linewidth=1.4)
        handles.append(
            (Line2D([], [], color="0.15", linestyle="--", linewidth=1.4),
             f"eGeMAPS ({mean:.3f}, [{low:.3f}, {high:.3f}])")
        )
        lowest, highest = float(np.nanmin([lowest, mean, low])), float(np.nanmax([highest, mean, high]))
    ax.axhline(1.0 / num_classes, color="0.45", linestyle=":", linewidth=1.3)
    handles.append(
        (Line2D([], [], color="0.45", linestyle=":", linewidth=1.3), f"chance (1/{num_classes})")
    )
    handles.append((Patch(color="0.5", alpha=0.25), interval))
    ax.legend(*zip(*handles, strict=True), loc="upper left", fontsize=8, framealpha=0.9)
    return lowest, highest


def plot_probe_f1(
    rows: Sequence[Mapping[str, Any]],
    stem: Path,
    *,
    title: str | None = None,
) -> list[Path]:
    """Macro-F1 (mean over seeds) by layer, one line per checkpoint, with the eGeMAPS baseline.

    Lines run from blue (first checkpoint) to red (last), with a colour bar of the steps; each
    has a band of its speaker-level interval (the ``f1_low``/``f1_high`` columns, a jackknife
    over speakers). The eGeMAPS probe is a dashed horizontal line with its band; chance level
    (1/K for the K classes present) is dotted. Linear probes at their best-validation weights.

    Args:
        rows: ``probes`` table rows (or ``ProbeService.process(...)["probes"]``).
        stem: output path without suffix; ``stem.png`` and ``stem.svg`` are written.
        title: figure title (default: says what is plotted and under which protocol).

    Returns:
        The paths written: ``[stem.png, stem.svg]``.

    Raises:
        InvalidInputError: no embedding rows.
    """
    shown = _select(rows)
    cells: dict[int, dict[int, tuple[float, float, float]]] = defaultdict(dict)
    baseline: tuple[float, float, float] | None = None
    for row in shown:
        stats = (float(row["f1_macro_cell"]), float(row["f1_low"]), float(row["f1_high"]))
        if row["features"] == "egemaps":
            baseline = stats
        else:
            cells[int(row["checkpoint_step"])][int(row["layer"])] = stats
    if not cells:
        raise InvalidInputError(
            [("rows", "no embedding probe rows to plot")], source="probe figure"
        )
    num_classes = int(shown[0]["num_classes"])
    seeds = len({r["seed"] for r in rows})
    protocol = shown[0]["protocol"]
    interval = shown[0]["interval"]

    steps = sorted(cells)
    layers = sorted({layer for by_layer in cells.values() for layer in by_layer})
    fig = Figure(figsize=(max(6.5, 2.5 + 0.32 * len(layers)), 4.6), layout="constrained")
    ax = fig.add_subplot()
    norm = BoundaryNorm(np.arange(len(steps) + 1) - 0.5, CHECKPOINT_CMAP.N)
    lowest, highest = 1.0 / num_classes, 0.0
    for i, step in enumerate(steps):
        colour = CHECKPOINT_CMAP(norm(i))
        xs = sorted(cells[step])
        grid = np.array([cells[step][x] for x in xs])
        ax.fill_between(xs, grid[:, 1], grid[:, 2], color=colour, alpha=0.12, linewidth=0)
        ax.plot(xs, grid[:, 0], color=colour, linewidth=1.6, marker="o", markersize=2.8)
        lowest = min(lowest, float(np.nanmin(grid[:, [0, 1]])))
        highest = max(highest, float(np.nanmax(grid[:, [0, 2]])))

    lowest, highest = _reference_lines(ax, baseline, num_classes, interval, (lowest, highest))
    ax.set_xticks(layers)
    ax.set_xlim(layers[0] - 0.5, layers[-1] + 0.5)
    margin = 0.04 * max(highest - lowest, 0.1)
    ax.set_ylim(max(0.0, lowest - margin), min(1.0, highest + margin))
    ax.set_xlabel(HIDDEN_STATE_LABEL)
    ax.set_ylabel(f"macro-F1, best-validation weights (mean of {seeds} seed{'s' if seeds != 1 else ''})")
    ax.grid(True, alpha=0.25, linewidth=0.6)
    ax.set_title(
        title if title is not None
        else f"Layer-wise SER probes ({protocol}): macro-F1 by layer and checkpoint"
    )
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=CHECKPOINT_CMAP), ax=ax, pad=0.015, fraction=0.04
    )
    bar.set_ticks(range(len(steps)), labels=[str(s) for s in steps])
    bar.set_label("fine-tuning step (checkpoint)")

    return save_figure(fig, stem)
