"""The CKA part of a run's report: its figures and its HTML section.

The report module calls ``write_cka_figures`` and ``cka_section`` and passes its own table and
figure renderers, so the page keeps one look.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from serlens.cka.config import CkaArgs, CkaConfig
from serlens.cka.figures import plot_cka_heatmap
from serlens.cka.inference_figures import plot_cka_changes, plot_cka_drift, plot_cka_significance

Table = Callable[..., str]
FigureHtml = Callable[[Path, str], str]

#: What each number means and what it does not; shown under the CKA section.
MEANING = (
    "<p><strong>Reading these numbers.</strong> CKA measures how similar the geometry of two representations "
    "of the same clips is (1: identical up to rotation and scale). <em>Linear CKA</em> (the paper's) is biased "
    "upward: under pure chance it averages sqrt(β<sub>x</sub>β<sub>y</sub>)/(n−1), where β is a view's effective "
    "rank, so a value must be read against its null mean (in brackets), and a change in effective rank during "
    "fine-tuning moves that null by itself. <em>Debiased CKA</em> is 0 in expectation under independence and is "
    "the headline. A cell is marked as not distinguishable from the null when its Benjamini–Hochberg q-value "
    "over the checkpoint × layer grid is at or above the threshold; the permutations move clips only within "
    "their speaker, because both views carry speaker identity and a plain shuffle would call almost every cell "
    "significant. Intervals come from leaving out one speaker at a time (speakers, not clips, are the "
    "independent units). Partial CKA removes what speaker, gender and sentence explain in both views.</p>"
    "<p><strong>What they do not say.</strong> A lower CKA with eGeMAPS does not show that a layer lost acoustic "
    "information: CKA compares whole geometries, so adding task variance that is independent of the acoustics "
    "lowers it while eGeMAPS stays exactly as decodable (the probes measure decodability). CKA is not a distance "
    "between checkpoints either; the drift panels and their re-embedding noise floor are.</p>"
)


def _rows(store: Any, name: str, analysis_key: str) -> list[dict[str, Any]]:
    return store.read(name, filters={"config_hash": analysis_key}).to_pylist()


def cka_config_of(config_yaml: str | None) -> CkaConfig:
    """The ``cka`` settings of a run's config YAML (defaults when absent)."""
    section = (yaml.safe_load(config_yaml or "") or {}).get("cka") or {}
    return CkaArgs(**section).to_config()


def write_cka_figures(store: Any, folder: Path, *, analysis_key: str, config: CkaConfig | None = None) -> list[Path]:
    """Draw every CKA figure of an analysis into ``folder``; returns the paths (PNG and SVG).

    Args:
        store: the feature store.
        folder: where the figures go.
        analysis_key: the analysis stage key (the rows' ``config_hash``).
        config: the run's CKA settings (q threshold, colour scale); defaults when None.
    """
    config = config or CkaConfig()
    cka = _rows(store, "cka", analysis_key)
    if not cka:
        return []
    paths = plot_cka_heatmap(cka, folder / "cka_egemaps", estimator="linear",
                             title="Linear CKA with eGeMAPS (subset 3; the paper's Figure 1)")
    if {r["estimator"] for r in cka} >= {"linear", "debiased"}:
        paths += plot_cka_significance(cka, folder / "cka_significance", q_threshold=config.q_threshold,
                                       unit_scale=config.colour_scale == "unit")
    changes = _rows(store, "cka_changes", analysis_key)
    estimator = "debiased" if "debiased" in config.estimators else config.estimators[0]
    if changes:
        paths += plot_cka_changes(changes, folder / "cka_changes", estimator=estimator)
    drift = _rows(store, "cka_drift", analysis_key)
    if any(r["against"] == "step0" for r in drift):
        paths += plot_cka_drift(drift, _rows(store, "cka_layers", analysis_key), folder / "cka_drift",
                                estimator=estimator)
    return paths


def _median(rows: Sequence[Mapping[str, Any]], column: str) -> float:
    values = [r[column] for r in rows if r.get(column) is not None and np.isfinite(r[column])]
    return float(np.median(values)) if values else float("nan")


def _per_step(cka: Sequence[Mapping[str, Any]], q_threshold: float) -> list[list[Any]]:
    out = []
    for step in sorted({r["checkpoint_step"] for r in cka}):
        lin = [r for r in cka if r["checkpoint_step"] == step and r["estimator"] == "linear"]
        deb = [r for r in cka if r["checkpoint_step"] == step and r["estimator"] == "debiased"]
        significant = sum(1 for r in deb if r.get("q_value") is not None and r["q_value"] < q_threshold)
        out.append([step, f"{significant} / {len(deb)}", _median(deb, "value"), _median(deb, "partial_value"),
                    _median(lin, "value"), _median(lin, "null_mean"), _median(lin, "effective_rank")])
    return out


def cka_section(store: Any, run: Mapping[str, Any], figures_dir: Path, *, table: Table, figure: FigureHtml) -> str:
    """The report's CKA section (empty when the run has no CKA rows).

    Args:
        store: the feature store.
        run: the ``runs`` row (``analysis_key``, ``config_yaml``).
        figures_dir: where ``write_cka_figures`` drew.
        table: the report's table renderer ``table(header, rows, fmt=...)``.
        figure: the report's figure renderer ``figure(path, caption)``.
    """
    cka = _rows(store, "cka", run["analysis_key"])
    if not cka:
        return ""
    config = cka_config_of(run.get("config_yaml"))
    first = cka[0]
    scheme = str(first.get("permutation_scheme")).replace("_", "-")
    intervals = (f"intervals: delete-one-speaker jackknife over {first.get('n_speakers')} speakers"
                 if first.get("ci_low") is not None else
                 f"no speaker intervals or change tests: {first.get('n_speakers') or 'no'} speaker(s), 3 needed")
    test = f"{scheme} permutations (m = {first.get('permutations')}), BH q < {config.q_threshold:g}; {intervals}"
    drift = _rows(store, "cka_drift", run["analysis_key"])
    floor = [r["value"] for r in drift if r["against"] == "reembed"]
    floor_text = (f"<p>Re-embedding checkpoint 0 in other batches gives CKA ≥ {min(floor):.6f} with the first "
                  "embedding: the noise floor of the drift values.</p>" if floor else "")
    header = ["step", "debiased cells with q < threshold", "median debiased", "median partial debiased",
              "median linear", "median linear null mean", "median effective rank"]
    ranks = (f"<p>Effective rank of eGeMAPS: {first['effective_rank_reference']:.1f}; of the embeddings: median per "
             "checkpoint below. Linear CKA's null mean follows from both.</p>"
             if first.get("effective_rank_reference") is not None else "")
    return ("<h2>CKA with eGeMAPS (paper Figure 1), with its null and uncertainty</h2>"
            + figure(figures_dir / "cka_significance.png", f"Debiased (headline) and linear CKA; {test}")
            + figure(figures_dir / "cka_egemaps.png", "The paper's view: linear CKA alone")
            + ranks + table(header, _per_step(cka, config.q_threshold))
            + figure(figures_dir / "cka_changes.png", "Change in CKA with eGeMAPS against checkpoint 0")
            + figure(figures_dir / "cka_drift.png", "Drift from checkpoint 0 and layer x layer CKA")
            + floor_text + MEANING
            + f"<p class=dim>Tables: cka, cka_changes, cka_drift, cka_layers (analysis key "
              f"<code>{html.escape(str(run['analysis_key']))}</code>).</p>")
