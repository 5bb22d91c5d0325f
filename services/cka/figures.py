"""The paper's Figure 1: CKA with eGeMAPS per fine-tuning checkpoint (rows) and layer (columns).

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot, no global state), so
they can be made from worker threads and with any backend; each is written as PNG and SVG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from serlens.cka.config import ESTIMATORS
from serlens.shared.errors import InvalidInputError
from serlens.shared.figures import HIDDEN_STATE_LABEL, save_figure

#: Largest grid (checkpoints x layers) whose cells get their value written in.
MAX_ANNOTATED_CELLS = 400

_CMAP = "viridis"

#: How references are spelled in titles and labels.
_DISPLAY_NAMES = {"egemaps": "eGeMAPS"}


def display_name(reference: str) -> str:
    """How a reference is spelled in titles (``egemaps`` -> ``eGeMAPS``)."""
    return _DISPLAY_NAMES.get(reference, reference)


def _label(value: float) -> str:
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def grid_of(
    rows: Sequence[Mapping[str, Any]], estimator: str, column: str = "value"
) -> tuple[list[int], list[int], np.ndarray, str]:
    """Return steps and layers (ascending), ``column`` [step, layer] (NaN: missing), the reference.

    Raises:
        InvalidInputError: no rows of ``estimator``, or rows of several references.
    """
    chosen = [r for r in rows if r["estimator"] == estimator]
    if not chosen:
        found = sorted({str(r["estimator"]) for r in rows})
        raise InvalidInputError(
            [("rows", f"no {estimator!r} CKA rows; estimators present: {found}")],
            source="CKA figure",
        )
    references = sorted({str(r["reference"]) for r in chosen})
    if len(references) != 1:
        raise InvalidInputError(
            [("rows", f"several references {references}; plot one at a time")], source="CKA figure"
        )
    steps = sorted({int(r["checkpoint_step"]) for r in chosen})
    layers = sorted({int(r["layer"]) for r in chosen})
    values = np.full((len(steps), len(layers)), np.nan)
    step_index = {s: i for i, s in enumerate(steps)}
    layer_index = {layer: j for j, layer in enumerate(layers)}
    for r in chosen:
        value = r.get(column)
        values[step_index[int(r["checkpoint_step"])], layer_index[int(r["layer"])]] = (
            float(value) if value is not None else np.nan
        )
    return steps, layers, values, references[0]


#: Axis label of hidden states (0 is not a transformer layer).


def shared_norm(*grids: np.ndarray, unit: bool = False) -> Normalize:
    """One colour scale for several panels: [0, 1], or the finite range of all of them."""
    if unit:
        return Normalize(vmin=0.0, vmax=1.0)
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.empty(0)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5e-3, high + 0.5e-3
    return Normalize(vmin=low, vmax=high)


def draw_heatmap(
    fig: Figure,
    ax: Axes,
    steps: Sequence[int],
    layers: Sequence[int],
    values: np.ndarray,
    *,
    colorbar_label: str,
    title: str,
    cell_width: float,
    norm: Normalize | None = None,
    hatch: np.ndarray | None = None,
    texts: np.ndarray | None = None,
    xlabel: str = HIDDEN_STATE_LABEL,
    ylabel: str = "fine-tuning step",
) -> None:
    """One heatmap panel: rows ``steps``, columns ``layers``; grey where NaN.

    ``hatch`` (bool, same shape) greys and hatches cells (e.g. not distinguishable from the
    null); ``texts`` replaces the written values.
    """
    norm = norm if norm is not None else shared_norm(values)
    cmap = colormaps[_CMAP].with_extremes(bad="#d9d9d9")
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest"
    )
    ax.set_xticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_yticks(range(len(steps)), [str(s) for s in steps])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.015)
    bar.set_label(colorbar_label)
    if hatch is not None:
        for i, j in zip(*np.nonzero(hatch), strict=True):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=(1, 1, 1, 0.55), edgecolor="#555",
                                   hatch="///", linewidth=0))
    if values.size <= MAX_ANNOTATED_CELLS:
        size = min(8.0, 14.5 * cell_width)
        for (i, j), value in np.ndenumerate(values):
            if not np.isfinite(value):
                continue
            red, green, blue, _ = cmap(norm(value))
            # Dark text on the bright (yellow-green) end of viridis and on greyed cells.
            bright = 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45
            colour = "black" if bright or (hatch is not None and hatch[i, j]) else "white"
            text = str(texts[i, j]) if texts is not None else _label(value)
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=colour)


def _save(fig: Figure, stem: Path) -> list[Path]:
    return save_figure(fig, stem)


def _size(steps: list[int], layers: list[int], cell_width: float) -> tuple[float, float]:
    """Figure size in inches for a grid whose cells are ``cell_width`` inches wide."""
    return max(5.0, 1.9 + cell_width * len(layers)), max(2.6, 1.4 + 0.42 * len(steps))


def plot_cka_heatmap(
    rows: Sequence[Mapping[str, Any]],
    stem: Path,
    *,
    estimator: str = "linear",
    title: str | None = None,
) -> list[Path]:
    """Heatmap of CKA per checkpoint (rows, first step at the top) and layer (columns).

    Viridis: yellow is high similarity, purple low; cells without a row are grey. Values are
    written in the cells when the grid has at most ``MAX_ANNOTATED_CELLS`` cells.

    Args:
        rows: ``CkaService.process`` rows (or the ``cka`` table's rows) of one reference.
        stem: output path without suffix; ``stem.png`` and ``stem.svg`` are written.
        estimator: which estimator's rows to plot (``linear`` or ``debiased``).
        title: figure title (default: names the estimator and the reference).

    Returns:
        The paths written: ``[stem.png, stem.svg]``.

    Raises:
        InvalidInputError: no rows for ``estimator``, or rows of several references.
    """
    grid = grid_of(rows, estimator)
    fig = Figure(figsize=_size(grid[0], grid[1], 0.48), layout="constrained")
    name = display_name(grid[3])
    _panel(fig, fig.add_subplot(), grid, estimator, cell_width=0.48,
           title=title if title is not None else f"{estimator.capitalize()} CKA of the embeddings with {name}")
    return _save(fig, stem)


def _panel(fig: Figure, ax: Any, grid: tuple[Any, ...], estimator: str, *, title: str, cell_width: float) -> None:
    """One estimator's heatmap on ``ax``, its colour bar naming the reference."""
    steps, layers, values, reference = grid
    draw_heatmap(fig, ax, steps, layers, values, colorbar_label=f"{estimator} CKA with {display_name(reference)}",
                 title=title, cell_width=cell_width)


def plot_cka_panels(
    rows: Sequence[Mapping[str, Any]],
    stem: Path,
    *,
    title: str | None = None,
) -> list[Path]:
    """Linear and debiased CKA heatmaps side by side, each with its own colour scale.

    Args:
        rows: rows of one reference holding both estimators.
        stem: output path without suffix; ``stem.png`` and ``stem.svg`` are written.
        title: overall title (default: names the reference).

    Returns:
        The paths written: ``[stem.png, stem.svg]``.

    Raises:
        InvalidInputError: an estimator without rows, or rows of several references.
    """
    grids = [grid_of(rows, estimator) for estimator in ESTIMATORS]
    cell_width = 0.36
    width, height = _size(grids[0][0], grids[0][1], cell_width)
    fig = Figure(figsize=(2 * width, height + 0.3), layout="constrained")
    axes = fig.subplots(1, len(ESTIMATORS))
    for ax, estimator, grid in zip(axes, ESTIMATORS, grids, strict=True):
        _panel(fig, ax, grid, estimator, title=f"{estimator} CKA", cell_width=cell_width)
    fig.suptitle(
        title if title is not None else f"CKA of the embeddings with {display_name(grids[0][3])}"
    )
    return _save(fig, stem)
