"""Figures and the self-contained HTML report of a run, rebuilt from the store alone.

``serlens report`` calls ``write_report(workdir)``: everything it shows comes from the
feature store's tables (the latest finished run's keys), so a report can be redrawn at any
time, on any machine that mounts the workdir.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serlens.shared.figures import save_figure
from serlens.shared.provenance import package_versions
from serlens.shared.runs import latest_run
from serlens.shared.store import FeatureStore
from serlens.shared.workdir import Workdir


def _plot_loudness(clips: Sequence[dict[str, Any]], stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = np.array([c["lufs_before"] for c in clips if np.isfinite(c["lufs_before"] or -np.inf)])
    after = np.array([c["lufs_after"] for c in clips if np.isfinite(c["lufs_after"] or -np.inf)])
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    bins = np.linspace(min(before.min(), after.min()) - 1, max(before.max(), after.max()) + 1, 40).tolist()
    ax.hist(before, bins=bins, alpha=0.6, label=f"before (median {np.median(before):.1f} LUFS)", color="#888")
    ax.hist(after, bins=bins, alpha=0.8, label=f"after (median {np.median(after):.1f} LUFS)", color="#1f77b4")
    target = clips[0]["target_lufs"]
    ax.axvline(target, color="k", ls="--", lw=1, label=f"target {target:g} LUFS")
    ax.set_xlabel("integrated loudness (LUFS, ITU-R BS.1770-4)")
    ax.set_ylabel("clips")
    ax.set_title("Loudness normalisation")
    ax.legend(frameon=False, fontsize=8)
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths


def write_figures(store: FeatureStore, folder: Path, run: dict[str, Any]) -> list[Path]:
    """Draw every figure of a run (a ``runs`` row; PNG and SVG) from the store."""
    from serlens.cka.report import cka_config_of, write_cka_figures
    from serlens.probe.report import read_probe_tables, write_probe_figures
    from serlens.trainer.figures import plot_training

    train_key, analysis_key = run["train_key"], run["analysis_key"]
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    metrics = store.read("train_metrics", filters={"train_key": train_key}, order_by=["step"]).to_pylist()
    steps = store.read("checkpoints", columns=["checkpoint_step"],
                       filters={"train_key": train_key}).column("checkpoint_step").to_pylist()
    if metrics:
        paths += plot_training(metrics, sorted(steps), folder / "training")
    paths += write_cka_figures(store, folder, analysis_key=analysis_key,
                               config=cka_config_of(run.get("config_yaml")))
    paths += write_probe_figures(read_probe_tables(store, analysis_key), folder)
    clips = store.read("clips", filters={"config_hash": run["data_key"]}).to_pylist()
    if clips:
        paths += _plot_loudness(clips, folder / "loudness")
    return paths


# --------------------------------------------------------------------------- HTML


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, fmt: str = "{:.3f}") -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if not np.isfinite(v) else fmt.format(v)
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path, caption: str) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    svg = path.with_suffix(".svg").name
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{html.escape(caption)} <span class=dim>(vector: figures/{html.escape(svg)})</span>"
            "</figcaption></figure>")


def _reproduce(store: FeatureStore, run: dict[str, Any], summary: dict[str, Any]) -> str:
    """The run's identity, config, recorded provenance, and the time of the run that computed each stage."""
    recorded = json.loads(run.get("provenance_json") or "null")
    if recorded is None:  # a run from before provenance was recorded: say so, show what is installed now
        recorded = {"packages": package_versions(), "note": "not recorded by this run; installed at report time"}
    packages = recorded.pop("packages", {})
    keys = {"prepare": run.get("data_key"), "egemaps": run.get("egemaps_key"), "train": run.get("train_key"),
            "embed": run.get("embed_hash"), "cka": run.get("analysis_key"), "probes": run.get("analysis_key")}
    computed = {(r["stage"], r["stage_key"]): r for r in store.read("stages").to_pylist()}
    reused = set(summary.get("reused", []))
    times = [[stage, (computed.get((stage, key)) or {}).get("seconds", float("nan")),
              "reused from an earlier run" if stage in reused else "this run"]
             for stage, key in keys.items() if key]
    return ("<h2>Reproduce</h2><p>Run <code>" + html.escape(run["run_id"]) + "</code>, "
            + f"{run.get('seconds') or 0:.0f} s; MLflow run <code>{html.escape(str(run.get('mlflow_run_id')))}"
            + f"</code> at <code>{html.escape(str(run.get('tracking_uri')))}</code>.</p>"
            + "<details open><summary>Config</summary><pre>" + html.escape(run["config_yaml"] or "")
            + "</pre></details>"
            + "<details><summary>Package versions (recorded when the run ran)</summary>"
            + _table(["package", "version"], sorted(packages.items())) + "</details>"
            + "<details><summary>Provenance: commit, hardware, weights (recorded when the run ran)</summary><pre>"
            + html.escape(json.dumps(recorded, indent=2, sort_keys=True)) + "</pre></details>"
            + "<details><summary>Stage times: the run that computed each stage's rows (s)</summary>"
            + _table(["stage", "seconds", "computed by"], times, fmt="{:.1f}") + "</details>")


def _summaries(store: FeatureStore, run: dict[str, Any]) -> dict[str, Any]:
    train_key, analysis_key, data_key = run["train_key"], run["analysis_key"], run["data_key"]
    clips = store.read("clips", filters={"config_hash": data_key}).to_pylist()
    checkpoints = store.read("checkpoints", filters={"train_key": train_key},
                             order_by=["checkpoint_step"]).to_pylist()
    cka = store.read("cka", filters={"config_hash": analysis_key}).to_pylist()
    probes = store.read("probes", filters={"config_hash": analysis_key}).to_pylist()
    skipped = store.read("skipped", filters={"config_hash": data_key}).to_pylist()
    return {"clips": clips, "checkpoints": checkpoints, "cka": cka, "probes": probes, "skipped": skipped}


def _random_init(paths: Workdir, checkpoints: Sequence[dict[str, Any]]) -> bool:
    for ck in checkpoints:
        config = (paths.resolve(ck.get("local_path")) or Path("")) / "config.json"
        if config.is_file():
            return bool(json.loads(config.read_text()).get("serlens_random_init", False))
    return False


def write_report(workdir: Path) -> Path:
    """Write ``<workdir>/report.html`` for the latest finished run; returns its path."""
    from serlens.cka.report import cka_section
    from serlens.probe.report import probe_section, read_probe_tables

    paths = Workdir(Path(workdir).resolve())
    store = paths.store
    run = latest_run(store)
    figures_dir = paths.figures
    write_figures(store, figures_dir, run)
    s = _summaries(store, run)
    summary = json.loads(run.get("summary_json") or "{}")
    warnings = list(summary.get("warnings", []))
    if _random_init(paths, s["checkpoints"]):
        warnings.insert(0, "The encoder was randomly initialised (the demo's tiny WavLM): these numbers exercise "
                           "the pipeline and say nothing about WavLM. Point model.name at real weights for the study.")
    n3 = sum(1 for c in s["clips"] if c["subset"] == 3)
    if 0 < n3 < 500:
        warnings.append(f"Subset 3 has {n3} clips, so each probe's test split has about {max(1, n3 // 10)}: "
                        "F1 differences of a few points are noise (see the spread over seeds).")

    sections: list[str] = []
    # data
    by_subset = []
    for subset in (1, 2, 3):
        rows = [c for c in s["clips"] if c["subset"] == subset]
        speakers = {c["speaker"] for c in rows}
        by_subset.append([subset, len(rows), len(speakers), sum(c["gender"] == "F" for c in rows),
                          sum(c["gender"] == "M" for c in rows), round(sum(c["duration_s"] for c in rows) / 60, 1)])
    sections.append("<h2>Data</h2>" + _table(["subset", "clips", "speakers", "female clips", "male clips",
                                              "minutes"], by_subset, fmt="{:.1f}")
                    + _figure(figures_dir / "loudness.png", "Integrated loudness before and after normalisation"))
    # training
    ck_rows = [[c["checkpoint_step"], c["epoch"], c["train_loss"], c["val_loss"], c["val_f1_macro"], c["uri"]]
               for c in s["checkpoints"]]
    sections.append("<h2>Fine-tuning</h2>"
                    + _figure(figures_dir / "training.png", "Training progress; checkpoints marked")
                    + _table(["step", "epoch", "train loss", "val loss", "val macro-F1", "MLflow URI"], ck_rows))
    # CKA
    sections.append(cka_section(store, run, figures_dir, table=_table, figure=_figure))
    # probes (the section lives with the probe service)
    sections.append(probe_section(read_probe_tables(store, run["analysis_key"]), figures_dir,
                                  table=_table, figure=_figure))
    if s["skipped"]:
        sections.append("<h2>Left out</h2>" + _table(["item", "stage", "reason"],
                                                     [[r["item"], r["stage"], r["reason"]] for r in s["skipped"]]))
    sections.append(_reproduce(store, run, summary))
    warn_html = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>serlens report {html.escape(run['run_id'])}</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}}
h1{{font-size:1.6em}} h2{{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}}
table{{border-collapse:collapse;font-size:.85em;margin:.8em 0;display:block;overflow-x:auto}}
td,th{{border:1px solid #ddd;padding:.25em .5em;text-align:right}} th{{background:#f5f5f5}}
figure{{margin:1em 0}} img{{max-width:100%}} figcaption{{font-size:.9em;color:#444}} .dim{{color:#888}}
.warn{{background:#fff4e5;border:1px solid #f0b060;padding:.6em 1em;border-radius:4px}}
pre{{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.8em}}
</style></head><body>
<h1>What happens inside a speech encoder when it is fine-tuned</h1>
<p>serlens report for run <code>{html.escape(run['run_id'])}</code>: {len(s['clips'])} clips,
{len(s['checkpoints'])} checkpoints, CKA and linear probes per checkpoint and layer on subset 3.</p>
{f'<div class="warn"><strong>Warnings</strong><ul>{warn_html}</ul></div>' if warnings else ''}
{''.join(sections)}
</body></html>
"""
    out = paths.report
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out
