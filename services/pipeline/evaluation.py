"""The analyses as an MLflow evaluation of the checkpoints they describe.

After a run's analyses and report, one MLflow run (tag ``serlens = analysis``, one per analysis
key) takes the fine-tuning run's checkpoint LoggedModels as inputs and logs, per checkpoint, a
summary of CKA with eGeMAPS and of the layer-wise probes with that checkpoint's ``model_id``
and step, so each model's page in MLflow shows what the analyses found; the report's figures
and HTML are its artifacts. The store stays the record of every number; this is its summary.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from serlens.shared import logged_models, tracking
from serlens.shared.errors import TrackingError
from serlens.shared.tracking import TrackingConfig

log = logging.getLogger(__name__)

ANALYSIS_KEY_TAG = "serlens.analysis_key"


def _best_by_step(rows: Iterable[Mapping[str, Any]], value: str) -> dict[int, tuple[float, int]]:
    """Per checkpoint step: the largest ``value`` over layers, and its layer."""
    best: dict[int, tuple[float, int]] = {}
    for r in rows:
        if r.get(value) is None or r.get("checkpoint_step") is None:
            continue
        step, candidate = int(r["checkpoint_step"]), (float(r[value]), int(r["layer"]))
        if step not in best or candidate[0] > best[step][0]:
            best[step] = candidate
    return best


def summarize(cka: Sequence[Mapping[str, Any]], probes: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """Summary metrics per checkpoint step.

    Per CKA estimator ``e``: ``cka_<e>_max`` (the largest CKA with the reference over layers)
    and ``cka_<e>_best_layer``. From the linear emotion probes on embeddings (weights ``best``):
    ``probe_f1_macro_max`` (the best layer's macro-F1, mean over seeds), ``probe_best_layer``,
    and ``probe_selectivity`` (that layer's macro-F1 minus the control task's), when present.
    """
    summary: dict[int, dict[str, float]] = defaultdict(dict)
    for estimator in sorted({str(r["estimator"]) for r in cka}):
        for step, (value, layer) in _best_by_step((r for r in cka if r["estimator"] == estimator), "value").items():
            summary[step] |= {f"cka_{estimator}_max": value, f"cka_{estimator}_best_layer": float(layer)}
    linear = [r for r in probes if r.get("features") == "embeddings" and r.get("head") == "linear"
              and r.get("weights") == "best"]
    control = {(int(r["checkpoint_step"]), int(r["layer"])): float(r["f1_macro_cell"]) for r in linear
               if r.get("task") == "control" and r.get("f1_macro_cell") is not None}
    for step, (value, layer) in _best_by_step((r for r in linear if r.get("task") == "emotion"),
                                              "f1_macro_cell").items():
        summary[step] |= {"probe_f1_macro_max": value, "probe_best_layer": float(layer)}
        if (step, layer) in control:
            summary[step]["probe_selectivity"] = value - control[(step, layer)]
    return dict(summary)


def _existing(config: TrackingConfig, analysis_key: str) -> str | None:
    experiment_id = tracking.ensure_experiment(config)
    found = tracking.call(config, "look up the evaluation run", lambda c: c.search_runs(
        [experiment_id], filter_string=f"tags.`{ANALYSIS_KEY_TAG}` = '{analysis_key}' AND status = 'FINISHED'",
        max_results=1))
    return found[0].info.run_id if found else None


def log_evaluation(config: TrackingConfig, *, training_run_id: str, train_key: str, analysis_key: str,
                   summary: Mapping[int, Mapping[str, float]], files: Sequence[Path], run_name: str) -> str:
    """Log the analyses' summary with each checkpoint's ``model_id``; return the evaluation run's id.

    Idempotent: an analysis key already logged (a rerun that reused the store) is not logged again.

    Args:
        config: tracking config.
        training_run_id: the fine-tuning run whose checkpoint models are evaluated.
        train_key: the fine-tuning run's key (a tag).
        analysis_key: the analyses' key (a tag; one evaluation per key).
        summary: ``summarize``'s metrics per checkpoint step.
        files: the report's figures and HTML, logged under ``report/``.
        run_name: the evaluation run's name.

    Raises:
        TrackingError: when MLflow cannot be reached after the retries.
    """
    from mlflow.entities import LoggedModelInput, Metric

    found = _existing(config, analysis_key)
    if found is not None:
        return found
    models = logged_models.checkpoint_models(config, training_run_id)
    run_id = tracking.start_run(config, run_name=run_name, tags={
        "serlens": "analysis", ANALYSIS_KEY_TAG: analysis_key, "serlens.train_key": train_key,
        "serlens.training_run_id": training_run_id})
    tracking.call(config, "link the evaluated models", lambda c: c.log_inputs(
        run_id, models=[LoggedModelInput(model_id) for _, model_id in sorted(models.items())]))
    now = int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, step, model_id=models.get(step))
               for step, values in sorted(summary.items()) for name, value in values.items()]
    if metrics:
        tracking.call(config, "log the analysis metrics", lambda c: c.log_batch(run_id, metrics=metrics))
    for path in files:
        tracking.log_file(config, run_id, path, "report")
    tracking.end_run(config, run_id, "FINISHED")
    return run_id


def run_name(study: Any, train_key: str) -> str:
    """The readable name of a study's fine-tuning run (``serlens.shared.tracking.run_name``)."""
    return tracking.run_name(model=study.args.model.name, dataset=study.dataset_name(), lr=study.args.train.lr,
                             key=train_key)


def log_study_evaluation(study: Any, train_key: str) -> str | None:
    """Read a finished study's CKA and probe rows from its store and ``log_evaluation`` them with its report.

    Args:
        study: the ``serlens.pipeline.run.Study`` (its store, config, result and workdir).
        train_key: its fine-tuning run's key.

    Returns:
        The evaluation run's id, or None when there is no training run or analysis, or MLflow is
        unreachable (then a warning in the study's result: the results are in the store either way).
    """
    training_run_id, analysis_key = study.result.mlflow_run_id, study.result.analysis_key
    if not training_run_id or not analysis_key:
        return None
    cka = study.store.read("cka", filters={"config_hash": analysis_key}).to_pylist()
    probes = study.store.read("probes", filters={"config_hash": analysis_key}).to_pylist()
    files = [*study.result.figures, study.dir.report] if study.dir.report.is_file() else list(study.result.figures)
    try:
        return log_evaluation(study.args.tracking.to_config(study.dir.root), training_run_id=training_run_id,
                              train_key=train_key, analysis_key=analysis_key, summary=summarize(cka, probes),
                              files=files, run_name=f"analysis · {run_name(study, train_key)}")
    except TrackingError as err:
        log.warning("the analyses are in the store but not in MLflow: %s", err)
        study.result.warnings.append(f"the analyses were not logged to MLflow: {err}")
        return None
