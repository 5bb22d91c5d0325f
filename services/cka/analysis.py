"""Every CKA statistic of one fine-tuning run, from the cells' centred Grams computed once.

For each (checkpoint, layer) cell against the reference: both estimators, the effective ranks
and the analytic null mean, a permutation p-value (plain or within-speaker), BH q-values over
the grid, a delete-one-speaker jackknife interval, and partial CKA with the confounds
regressed out. Across cells: change tests against checkpoint 0 and the previous checkpoint,
drift (CKA with checkpoint 0 and with the previous checkpoint, same layer), the layer x layer
matrix of every checkpoint, and the noise floor of re-embedding checkpoint 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serlens.cka import grams, stats
from serlens.cka.config import CkaConfig
from serlens.cka.core import cka_against
from serlens.cka.drift import pairwise_cka
from serlens.cka.partial import PartialCka, design_basis

Cell = tuple[int, int]

#: Fewest speakers a delete-one-speaker jackknife is computed with (fewer: no intervals).
MIN_JACKKNIFE_SPEAKERS = 3


@dataclass
class CkaTables:
    """Rows of the CKA tables (without ``train_key`` and lineage), by table name."""

    cka: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)

    def by_table(self) -> dict[str, list[dict[str, Any]]]:
        """``{table name: rows}`` for the store."""
        return {"cka": self.cka, "cka_drift": self.drift, "cka_layers": self.layers, "cka_changes": self.changes}


@dataclass
class _Grid:
    """Per-cell summaries (index i follows ``keys``) gathered in one pass over the cells."""

    keys: list[Cell]
    layout: grams.StripLayout
    observed: np.ndarray  # cells x estimators
    self_terms: np.ndarray  # cells x estimators
    ranks: np.ndarray  # cells
    partial: np.ndarray  # cells x estimators (NaN without confounds)
    leave_out: np.ndarray | None  # cells x groups x estimators
    stack: np.ndarray  # cells x layout.size
    diagonals: np.ndarray  # cells x n
    self_inner: np.ndarray  # cells: <K, K>


def scheme_of(config: CkaConfig, speakers: np.ndarray | None) -> str:
    """The permutation scheme used: ``auto`` is within speaker whenever speakers are known."""
    if config.scheme == "auto":
        return "within_speaker" if speakers is not None else "plain"
    return config.scheme


def _summaries(keys: Sequence[Cell], reps: Sequence[np.ndarray], reference: np.ndarray, gram_y: np.ndarray,
               config: CkaConfig, speakers: np.ndarray | None, partial: PartialCka | None) -> _Grid:
    """One pass over the cells: the point estimates, and what the inference needs of each Gram.

    The point estimates come from ``cka_against`` (the estimator in feature space, as the study
    has always computed them); the permutation, jackknife and partial statistics use the
    cells' n x n Grams. Both are float32 products summed in float64, so they agree to float32
    round-off (about 1e-8), which no p-value or interval can resolve.
    """
    n, names = gram_y.shape[0], config.estimators
    dtype = np.float32 if config.gram_dtype == "float32" else np.float64
    layout = grams.StripLayout(n)
    count = len(keys)
    grid = _Grid(list(keys), layout, np.empty((count, len(names))), np.empty((count, len(names))), np.empty(count),
                 np.full((count, len(names)), np.nan), None, np.empty((count, layout.size), dtype=dtype),
                 np.empty((count, n)), np.empty(count))
    jackknife = None
    if speakers is not None and np.unique(speakers).size >= MIN_JACKKNIFE_SPEAKERS:
        grid.leave_out = np.empty((count, np.unique(speakers).size, len(names)))
        jackknife = grams.LeaveOneGroupOut(gram_y, speakers)
    for i, rep in enumerate(reps):
        gram = grams.centred_gram(rep)
        kx = np.diag(gram)
        self_inner = float(np.vdot(gram, gram))
        grid.self_inner[i] = self_inner
        for j, e in enumerate(names):
            grid.self_terms[i, j] = grams.hsic(e, self_inner, kx @ kx, kx.sum(), kx.sum(), n)
        grid.observed[i] = cka_against([rep], reference, names)[0]
        grid.ranks[i] = grams.effective_rank(gram)
        grid.stack[i] = grid.layout.pack(gram, dtype=dtype)
        grid.diagonals[i] = kx
        if grid.leave_out is not None and jackknife is not None:
            grid.leave_out[i] = jackknife.values(gram, names)
        if partial is not None:
            grid.partial[i] = partial.values(gram, names)
    return grid


def _permutation_tests(grid: _Grid, gram_y: np.ndarray, config: CkaConfig,
                       groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """p-values and the mean CKA under the scheme's permutations (cells x estimators each)."""
    names, n = config.estimators, gram_y.shape[0]
    if config.permutations == 0:
        nan = np.full(grid.observed.shape, np.nan)
        return nan, nan.copy()
    perms = grams.draw_permutations(n, config.permutations, groups=groups, seed=config.seed)
    inner = grams.permuted_inner(grid.stack, gram_y, perms, grid.layout)
    ky = np.diag(gram_y)
    kl = grid.diagonals @ ky[perms].T  # cells x m: k · l[π]
    traces = grid.diagonals.sum(axis=1)[:, None]
    p_values, means = np.empty(grid.observed.shape), np.empty(grid.observed.shape)
    for j, e in enumerate(names):
        self_y = grams.hsic(e, np.vdot(gram_y, gram_y), ky @ ky, ky.sum(), ky.sum(), n)
        permuted = grams.ratio(grams.hsic(e, inner, kl, traces, ky.sum(), n), grid.self_terms[:, j:j + 1], self_y)
        p_values[:, j] = stats.permutation_p_values(grid.observed[:, j], permuted)
        means[:, j] = permuted.mean(axis=1)
    return p_values, means


def analyse_cells(keys: Sequence[Cell], reps: Sequence[np.ndarray], reference: np.ndarray, config: CkaConfig, *,
                  reference_name: str, speakers: Sequence[str] | None = None,
                  confounds: Mapping[str, Sequence[str]] | None = None,
                  reembedded: Mapping[int, np.ndarray] | None = None) -> CkaTables:
    """Every CKA table of a run (see the module docstring).

    Args:
        keys: the cells' (checkpoint_step, layer), sorted; ``reps[i]`` is cell ``keys[i]``.
        reps: the cells' representations (n x d each; read one at a time).
        reference: n x q reference (eGeMAPS), already standardised if configured.
        config: the settings.
        reference_name: what the rows' ``reference`` column says.
        speakers: a speaker per clip (None: unknown; then no jackknife and plain permutations).
        confounds: factors to regress out for partial CKA (name -> label per clip).
        reembedded: layer -> checkpoint 0's cell re-embedded with another batch composition.
    """
    groups = np.asarray([str(s) for s in speakers]) if speakers is not None else None
    gram_y = grams.centred_gram(reference)
    partial = PartialCka(gram_y, design_basis(confounds)) if confounds else None
    grid = _summaries(keys, reps, reference, gram_y, config, groups, partial)
    scheme = scheme_of(config, groups)
    p_values, permuted_means = _permutation_tests(grid, gram_y, config, groups if scheme == "within_speaker" else None)
    n = gram_y.shape[0]
    rank_y = grams.effective_rank(gram_y)
    common = {"reference": reference_name, "n_clips": n, "permutation_scheme": scheme,
              "permutations": config.permutations, "n_speakers": None if groups is None else len(np.unique(groups)),
              "effective_rank_reference": rank_y, "confounds": ",".join(confounds) if confounds else None}
    tables = CkaTables()
    for j, e in enumerate(config.estimators):
        q_values = stats.bh_q_values(p_values[:, j])
        interval = (stats.jackknife_interval(grid.observed[:, j], grid.leave_out[:, :, j], level=config.level)
                    if grid.leave_out is not None else None)
        for i, (step, layer) in enumerate(grid.keys):
            null = grams.null_mean_linear(grid.ranks[i], rank_y, n) if e == "linear" else 0.0
            tables.cka.append({
                "checkpoint_step": int(step), "layer": int(layer), "estimator": e, **common,
                "value": float(grid.observed[i, j]), "effective_rank": float(grid.ranks[i]), "null_mean": null,
                "null_mean_permuted": float(permuted_means[i, j]), "p_value": float(p_values[i, j]),
                "q_value": float(q_values[i]), "partial_value": float(grid.partial[i, j]),
                **_interval_columns(interval, i)})
    tables.cka.sort(key=lambda r: (r["checkpoint_step"], r["layer"], config.estimators.index(r["estimator"])))
    tables.changes = _changes(grid, config, n)
    tables.drift, tables.layers = _drift(grid, config, n, reembedded)
    return tables


def _interval_columns(interval: stats.Interval | None, i: int) -> dict[str, float | None]:
    if interval is None:
        return {"std_error": None, "ci_low": None, "ci_high": None}
    return {"std_error": float(interval.standard_error[i]), "ci_low": float(interval.low[i]),
            "ci_high": float(interval.high[i])}


def _changes(grid: _Grid, config: CkaConfig, n: int) -> list[dict[str, Any]]:
    """CKA(k) - CKA(baseline) per layer, with its paired speaker-jackknife interval and p."""
    if grid.leave_out is None:
        return []
    index = {key: i for i, key in enumerate(grid.keys)}
    steps = sorted({s for s, _ in grid.keys})
    rows: list[dict[str, Any]] = []
    for j, e in enumerate(config.estimators):
        for baseline in ("step0", "previous"):
            pairs = [(index[(k, layer)], index[(b, layer)], k, b, layer)
                     for pos, k in enumerate(steps[1:], start=1)
                     for b in [steps[0] if baseline == "step0" else steps[pos - 1]]
                     for layer in sorted({ly for s, ly in grid.keys if s == k}) if (b, layer) in index]
            if not pairs:
                continue
            a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
            interval = stats.jackknife_interval(grid.observed[a, j] - grid.observed[b, j],
                                                grid.leave_out[a, :, j] - grid.leave_out[b, :, j], level=config.level)
            q_values = stats.bh_q_values(interval.p_value)
            for t, (_, _, k, base, layer) in enumerate(pairs):
                rows.append({"checkpoint_step": int(k), "layer": int(layer), "estimator": e, "baseline": baseline,
                             "baseline_step": int(base), "difference": float(interval.estimate[t]),
                             "p_value": float(interval.p_value[t]), "q_value": float(q_values[t]),
                             "n_clips": n, **_interval_columns(interval, t)})
    return rows


def _drift(grid: _Grid, config: CkaConfig, n: int,
           reembedded: Mapping[int, np.ndarray] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drift rows (vs step 0, vs previous, re-embedding floor) and layer x layer rows."""
    values = pairwise_cka(grid.layout.pairwise(grid.stack), grid.diagonals, n, config.estimators)
    index = {key: i for i, key in enumerate(grid.keys)}
    steps = sorted({s for s, _ in grid.keys})
    drift: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    for j, e in enumerate(config.estimators):
        for pos, step in enumerate(steps):
            own = sorted(ly for s, ly in grid.keys if s == step)
            for against, base in (("step0", steps[0]), ("previous", steps[max(pos - 1, 0)])):
                drift += [{"checkpoint_step": step, "layer": ly, "estimator": e, "against": against,
                           "against_step": base, "n_clips": n,
                           "value": float(values[j, index[(step, ly)], index[(base, ly)]])}
                          for ly in own if (base, ly) in index]
            layers += [{"checkpoint_step": step, "layer_a": la, "layer_b": lb, "estimator": e, "n_clips": n,
                        "value": float(values[j, index[(step, la)], index[(step, lb)]])} for la in own for lb in own]
    for layer, again in (reembedded or {}).items():
        first = index.get((steps[0], int(layer)))
        if first is None:
            continue
        gram = grams.centred_gram(again)
        k = np.diag(gram)
        inner = grid.layout.inner(grid.stack[first], gram)
        kf = grid.diagonals[first]
        self_first = float(grid.self_inner[first])
        for e in config.estimators:
            value = grams.ratio(grams.hsic(e, inner, kf @ k, kf.sum(), k.sum(), n),
                                grams.hsic(e, self_first, kf @ kf, kf.sum(), kf.sum(), n),
                                grams.hsic(e, np.vdot(gram, gram), k @ k, k.sum(), k.sum(), n))
            drift.append({"checkpoint_step": steps[0], "layer": int(layer), "estimator": e, "against": "reembed",
                          "against_step": steps[0], "n_clips": n, "value": float(value)})
    return drift, layers
