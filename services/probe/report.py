"""The probes' figures and their section of the run report (HTML), from the store.

``serlens.pipeline.report`` owns the page and its table and figure helpers; it calls
``write_probe_figures`` and ``probe_section`` and passes those helpers in.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serlens.egemaps.groups import GROUPS
from serlens.probe.figures import plot_probe_f1
from serlens.probe.figures_detail import (
    group_r2,
    plot_confusions,
    plot_feature_r2,
    plot_feature_r2_change,
)

Rows = list[dict[str, Any]]
TableFn = Callable[..., str]
FigureFn = Callable[[Path, str], str]

_TABLES = ("probes", "probe_features", "probe_classes", "probe_confusion")


def read_probe_tables(store: Any, analysis_key: str) -> dict[str, Rows]:
    """Every probe table's rows of one analysis."""
    return {name: store.read(name, filters={"config_hash": analysis_key}).to_pylist() for name in _TABLES}


def write_probe_figures(tables: dict[str, Rows], folder: Path) -> list[Path]:
    """Draw the probe figures that the tables have rows for; returns the paths written."""
    paths: list[Path] = []
    if any(r["features"] == "embeddings" for r in tables["probes"]):
        paths += plot_probe_f1(tables["probes"], folder / "probe_f1")
    if tables["probe_features"]:
        paths += plot_feature_r2(tables["probe_features"], folder / "probe_feature_r2")
        if len({r["checkpoint_step"] for r in tables["probe_features"]}) > 1:
            paths += plot_feature_r2_change(tables["probe_features"], folder / "probe_feature_r2_change")
    if tables["probe_confusion"]:
        paths += plot_confusions(tables["probe_confusion"], folder / "probe_confusion")
    return paths


def _cell_rows(probes: Rows) -> Rows:
    """One row per (cell, head, task, weights): the seed-0 row carries the cell's statistics."""
    first = min((r["seed"] for r in probes), default=0)
    return [r for r in probes if r["seed"] == first]


def _classification(probes: Rows, table: TableFn) -> str:
    cells = _cell_rows(probes)
    linear = [r for r in cells if (r["head"], r["task"], r["weights"]) == ("linear", "emotion", "best")]
    rows = []
    for step in sorted({r["checkpoint_step"] for r in linear if r["features"] == "embeddings"}):
        mine = [r for r in linear if r["checkpoint_step"] == step]
        best = max(mine, key=lambda r: r["f1_macro_cell"])
        stop = next(r for r in cells if (r["head"], r["task"], r["weights"], r["checkpoint_step"], r["layer"])
                    == ("linear", "emotion", "stop", step, best["layer"]))
        rows.append([step, best["layer"], best["f1_macro_cell"], best["f1_low"], best["f1_high"],
                     best["seed_std"], stop["f1_macro_cell"]])
    base = [r for r in linear if r["features"] == "egemaps"]
    rows += [["eGeMAPS", "–", r["f1_macro_cell"], r["f1_low"], r["f1_high"], r["seed_std"], float("nan")]
             for r in base]
    return table(["step", "best layer", "macro-F1 (best weights)", "interval low", "interval high",
                  "std over seeds", "macro-F1 (stop weights)"], rows)


def _mlp(probes: Rows, table: TableFn) -> str:
    cells = [r for r in _cell_rows(probes) if r["weights"] == "best" and r["features"] == "embeddings"]
    score = {(r["head"], r["task"], r["checkpoint_step"], r["layer"]): r["f1_macro_cell"] for r in cells}
    keys = sorted({(s, la) for h, _, s, la in score if h == "mlp"})
    if not keys:
        return ""
    rows = [[s, la, score.get(("linear", "emotion", s, la)), score[("mlp", "emotion", s, la)],
             score[("mlp", "control", s, la)], score[("mlp", "emotion", s, la)] - score[("mlp", "control", s, la)]]
            for s, la in keys]
    return ("<h3>MLP probes and their control task</h3><p>An MLP probe (one hidden ReLU layer) can decode "
            "what a linear one cannot, but it can also memorise. Its control task keeps each speaker's labels "
            "and shuffles them among that speaker's clips; selectivity (task minus control, Hewitt and Liang "
            "2019) is what the MLP finds beyond memorisation.</p>"
            + table(["step", "layer", "linear F1", "MLP F1", "MLP control F1", "MLP selectivity"], rows))


def _features(rows: Rows, table: TableFn) -> str:
    grids = group_r2(rows)
    steps = sorted(grids)
    selectivity = group_r2(rows, "selectivity")
    layers = sorted({int(r["layer"]) for r in rows})
    out = []
    for step in steps:
        best = np.nanargmax(grids[step], axis=1)
        out += [[step, group, layers[int(best[g])], float(grids[step][g, best[g]]),
                 float(selectivity[step][g, best[g]]), float(np.nanmean(grids[step][g]))]
                for g, group in enumerate(GROUPS)]
    return table(["step", "eGeMAPS group", "best layer", "R² there", "selectivity there", "mean R² over layers"],
                 out)


def probe_section(tables: dict[str, Rows], figures_dir: Path, *, table: TableFn, figure: FigureFn) -> str:
    """The report's probe section: figures, tables and what they mean, in plain words."""
    probes = tables["probes"]
    if not probes:
        return ""
    protocol = str(probes[0]["protocol"])
    classes = int(probes[0]["num_classes"])
    words = {"paper": "the paper's single stratified 80/10/10 split: speakers appear in train and test, "
                      "so these F1 values are speaker-dependent",
             "grouped_cv": "speaker-grouped cross-validation: every analysis clip is predicted once, by "
                           "probes that never heard its speaker"}.get(protocol, protocol)
    interval = str(probes[0]["interval"])
    parts = [
        "<h2>Layer-wise probes (paper Figure 2)</h2>",
        f"<p>Protocol: <strong>{html.escape(protocol)}</strong> ({html.escape(words)}). Bands and intervals "
        f"are {html.escape(interval)}: they measure how much the score would move with other "
        "speakers, which the spread over seeds (initialisation and batch order, also shown) does not. "
        f"Chance is 1/{classes} for the {classes} classes present. The figure uses the best-validation "
        "weights; the table also gives the stop-epoch weights.</p>",
        figure(figures_dir / "probe_f1.png", "Macro-F1 by layer, one line per checkpoint (best-validation weights)"),
        _classification(probes, table),
        _mlp(probes, table),
    ]
    if tables["probe_features"]:
        parts += [
            "<h3>What each layer knows about each acoustic feature</h3><p>A ridge probe per eGeMAPS feature "
            "(88, grouped as in Eyben et al. 2016) predicts it from the layer's embedding under speaker-grouped "
            "cross-validation with α chosen by nested cross-validation. R² near 1 means the feature can be read "
            "off the layer linearly; the control (targets shuffled within folds) is near 0, and selectivity is "
            "R² minus control. Unlike CKA, this tells information that is lost from information that is only "
            "outweighed by new, task-related variance.</p>",
            figure(figures_dir / "probe_feature_r2.png", "Ridge R² by eGeMAPS group and layer, per checkpoint"),
            figure(figures_dir / "probe_feature_r2_change.png", "Change of group R² from the first checkpoint"),
            _features(tables["probe_features"], table),
        ]
    if tables["probe_classes"]:
        parts += ["<h3>Per class</h3><p>Per-class F1 of the best probe cell, the eGeMAPS probe and the fine-tuned "
                  "classifier itself on the analysis clips (its own held-out result). Chance F1 of a class is its "
                  "share of the clips.</p>",
                  figure(figures_dir / "probe_confusion.png", "Confusion matrices, rows normalised"),
                  _classes(tables["probe_classes"], table)]
    return "".join(parts)


def _classes(rows: Sequence[dict[str, Any]], table: TableFn) -> str:
    sources = list(dict.fromkeys(r["source"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    f1 = {(r["source"], r["label"]): r["f1"] for r in rows}
    chance = {r["label"]: r["chance_f1"] for r in rows}
    return table(["class", *[s.replace("_", " ") for s in sources], "chance"],
                 [[label, *[f1.get((s, label), float("nan")) for s in sources], chance[label]] for label in labels])
