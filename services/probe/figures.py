"""The paper's Figure 2: probe macro-F1 by layer, one line per fine-tuning checkpoint.

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
from serlens.shared.figures import save_figure
from serlens.shared.schema import EMOTIONS

#: First checkpoint blue, last red (the paper's colouring), through purple.
CHECKPOINT_CMAP = LinearSegmentedColormap.from_list(
    "checkpoints", ["#1f5fbf", "#7b3fa0", "#d62728"]
)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std())


def plot_probe_f1(
    rows: Sequence[Mapping[str, Any]],
    stem: Path,
    *,
    title: str | None = None,
    num_classes: int = len(EMOTIONS),
) -> list[Path]:
    """Macro-F1 (mean over seeds) by layer, one line per checkpoint, with the eGeMAPS baseline.

    Lines run from blue (first checkpoint) to red (last), with a colour bar of the steps; each
    has a band of +-1 standard deviation over seeds. The eGeMAPS probe is a dashed horizontal
    line with its band; chance level (1/K) is dotted.

    Args:
        rows: ``ProbeService.process`` rows (or the ``probes`` table's rows).
        stem: output path without suffix; ``stem.png`` and ``stem.svg`` are written.
        title: figure title (default: says what is plotted).
        num_classes: K, for the chance level 1/K.

    Returns:
        The paths written: ``[stem.png, stem.svg]``.

    Raises:
        InvalidInputError: no embedding rows.
    """
    cells: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    baseline: list[float] = []
    seeds = set()
    for row in rows:
        seeds.add(row["seed"])
        if row["features"] == "egemaps":
            baseline.append(float(row["f1_macro"]))
        else:
            cells[int(row["checkpoint_step"])][int(row["layer"])].append(float(row["f1_macro"]))
    if not cells:
        raise InvalidInputError(
            [("rows", "no embedding probe rows to plot")], source="probe figure"
        )

    steps = sorted(cells)
    layers = sorted({layer for by_layer in cells.values() for layer in by_layer})
    fig = Figure(figsize=(max(6.5, 2.5 + 0.32 * len(layers)), 4.6), layout="constrained")
    ax = fig.add_subplot()
    norm = BoundaryNorm(np.arange(len(steps) + 1) - 0.5, CHECKPOINT_CMAP.N)
    lowest, highest = 1.0 / num_classes, 0.0
    for i, step in enumerate(steps):
        colour = CHECKPOINT_CMAP(norm(i))
        xs = sorted(cells[step])
        stats = np.array([_mean_std(cells[step][x]) for x in xs])
        ax.fill_between(
            xs,
            stats[:, 0] - stats[:, 1],
            stats[:, 0] + stats[:, 1],
            color=colour,
            alpha=0.12,
            linewidth=0,
        )
        ax.plot(xs, stats[:, 0], color=colour, linewidth=1.6, marker="o", markersize=2.8)
        lowest, highest = (
            min(lowest, float((stats[:, 0] - stats[:, 1]).min())),
            max(highest, float((stats[:, 0] + stats[:, 1]).max())),
        )

    handles = []
    if baseline:
        mean, std = _mean_std(baseline)
        ax.axhspan(mean - std, mean + std, color="0.35", alpha=0.12, linewidth=0)
        ax.axhline(mean, color="0.15", linestyle="--", linewidth=1.4)
        handles.append(
            (
                Line2D([], [], color="0.15", linestyle="--", linewidth=1.4),
                f"eGeMAPS ({mean:.3f} ± {std:.3f})",
            )
        )
        lowest, highest = min(lowest, mean - std), max(highest, mean + std)
    chance = 1.0 / num_classes
    ax.axhline(chance, color="0.45", linestyle=":", linewidth=1.3)
    handles.append(
        (Line2D([], [], color="0.45", linestyle=":", linewidth=1.3), f"chance (1/{num_classes})")
    )
    handles.append((Patch(color="0.5", alpha=0.25), "± 1 std over seeds"))
    ax.legend(*zip(*handles, strict=True), loc="upper left", fontsize=8, framealpha=0.9)

    ax.set_xticks(layers)
    ax.set_xlim(layers[0] - 0.5, layers[-1] + 0.5)
    margin = 0.04 * max(highest - lowest, 0.1)
    ax.set_ylim(max(0.0, lowest - margin), min(1.0, highest + margin))
    ax.set_xlabel("transformer layer")
    ax.set_ylabel(f"test macro-F1 (mean over {len(seeds)} seed{'s' if len(seeds) != 1 else ''})")
    ax.grid(True, alpha=0.25, linewidth=0.6)
    ax.set_title(
        title if title is not None else "Layer-wise SER probes: macro-F1 by layer and checkpoint"
    )
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=CHECKPOINT_CMAP), ax=ax, pad=0.015, fraction=0.04
    )
    bar.set_ticks(range(len(steps)), labels=[str(s) for s in steps])
    bar.set_label("fine-tuning step (checkpoint)")

    return save_figure(fig, stem)
