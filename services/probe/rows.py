"""Rows of the probe tables, built in one place from the probes' predictions.

The tables are ``serlens.shared.schema``'s PROBES, PROBE_FEATURES, PROBE_CLASSES and
PROBE_CONFUSION.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serlens.egemaps.groups import feature_groups
from serlens.probe.config import ProbeConfig
from serlens.probe.protocols import ProtocolResult
from serlens.probe.ridge import RidgeProbeResult
from serlens.probe.uncertainty import confusion_counts, f1_from_confusion, speaker_jackknife
from serlens.shared.errors import InvalidInputError

CellKey = tuple[str, int | None, int | None]


@dataclass(frozen=True)
class Context:
    """What every row of one ``ProbeService.process`` call shares."""

    keys: Sequence[CellKey]
    classes: tuple[str, ...]
    speakers: np.ndarray | None
    config: ProbeConfig


def _scores(predictions: np.ndarray, truth: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Macro-F1 and accuracy over the last axis of ``predictions`` [..., n]."""
    counts = confusion_counts(predictions, truth, num_classes)
    f1 = f1_from_confusion(counts).mean(axis=-1)
    accuracy = np.trace(counts, axis1=-2, axis2=-1) / len(truth)
    return f1, accuracy


def probe_rows(
    context: Context, result: ProtocolResult, codes: np.ndarray, *, head: str, task: str
) -> list[dict[str, Any]]:
    """One ``probes`` row per (cell, weights, seed), with the cell's interval and seed spread."""
    config, num_classes = context.config, len(context.classes)
    truth = codes[result.scored]
    out = []
    for weights, predictions in (("best", result.predictions_best), ("stop", result.predictions)):
        f1, accuracy = _scores(predictions, truth, num_classes)
        if context.speakers is not None:
            interval = speaker_jackknife(predictions, truth, context.speakers[result.scored],
                                         num_classes, level=config.interval_level)
            low, high, error = interval.low, interval.high, interval.std_error
            label = f"speaker jackknife {config.interval_level:.0%} ({interval.units} speakers)"
        else:
            low = high = error = np.full(len(context.keys), np.nan)
            label = "none (no speaker ids)"
        for i, (kind, step, layer) in enumerate(context.keys):
            cell = {
                "features": kind, "checkpoint_step": step, "layer": layer,
                "protocol": config.protocol, "head": head, "task": task, "weights": weights,
                "f1_macro_cell": float(f1[i].mean()), "f1_low": float(low[i]),
                "f1_high": float(high[i]), "f1_std_error": float(error[i]), "interval": label,
                "seed_std": float(f1[i].std()), "num_classes": num_classes,
                "n_clips": len(truth),
            }
            out += [{**cell, "seed": seed, "f1_macro": float(f1[i, seed]),
                     "accuracy": float(accuracy[i, seed]),
                     "epochs": round(float(result.epochs[i, seed])),
                     "val_loss": float(result.val_loss[i, seed])}
                    for seed in range(config.seeds)]
    return out


def class_rows(
    context: Context, result: ProtocolResult, codes: np.ndarray, classifier: np.ndarray | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``probe_classes`` and ``probe_confusion`` rows of the sources worth a closer look.

    The sources: the best embedding cell (by mean macro-F1 at the best-validation weights),
    the eGeMAPS probe, and the fine-tuned classifier.

    Raises:
        InvalidInputError: classifier predictions of another length or outside the classes.
    """
    num_classes, truth = len(context.classes), codes[result.scored]
    f1, _ = _scores(result.predictions_best, truth, num_classes)
    sources: list[tuple[str, CellKey, np.ndarray, np.ndarray]] = []
    embedding = [i for i, key in enumerate(context.keys) if key[0] == "embeddings"]
    if embedding:
        best = max(embedding, key=lambda i: f1[i].mean())
        sources.append(("best_cell", context.keys[best], result.predictions_best[best], truth))
    sources += [("egemaps", key, result.predictions_best[i], truth)
                for i, key in enumerate(context.keys) if key[0] == "egemaps"]
    if classifier is not None:
        predicted = np.asarray(classifier, dtype=np.int64)
        if predicted.shape != codes.shape or predicted.min() < -1 or predicted.max() >= num_classes:
            raise InvalidInputError(
                [("classifier", f"{predicted.shape} predictions; expected {codes.shape} codes "
                                f"of the classes {list(context.classes)} (-1: another label)")],
                source="probe input")
        # A label the analysis clips do not have (-1) is an error of the true class: column K.
        predicted = np.where(predicted < 0, num_classes, predicted)
        sources.append(("classifier", ("classifier", None, None), predicted[None], codes))
    classes_out, confusion_out = [], []
    names = [*context.classes, "other"]
    for source, (kind, step, layer), predictions, labels in sources:
        counts = confusion_counts(predictions, labels, num_classes + 1).sum(axis=0)
        per_class = f1_from_confusion(counts)
        support = np.bincount(labels, minlength=num_classes)
        classes_out += [
            {"source": source, "features": kind, "checkpoint_step": step, "layer": layer,
             "protocol": context.config.protocol if source != "classifier" else "held-out",
             "label": label, "f1": float(per_class[k]), "support": int(support[k]),
             "chance_f1": float(support[k] / len(labels))}
            for k, label in enumerate(context.classes)
        ]
        confusion_out += [
            {"source": source, "true_label": t, "predicted_label": p, "count": int(counts[a, b])}
            for a, t in enumerate(context.classes) for b, p in enumerate(names)
            if b < num_classes or counts[a, b] > 0
        ]
    return classes_out, confusion_out


def feature_rows(
    key: CellKey, names: Sequence[str], result: RidgeProbeResult, *, folds: int
) -> list[dict[str, Any]]:
    """One ``probe_features`` row per target of one cell's ridge probes."""
    groups = feature_groups()
    alpha = np.median(result.alpha, axis=0)
    return [
        {"features": key[0], "checkpoint_step": key[1], "layer": key[2], "target": name,
         "target_group": groups.get(name, "other"), "r2": float(result.r2[j]),
         "r2_control": float(result.r2_control[j]), "selectivity": float(result.selectivity[j]),
         "alpha_median": float(alpha[j]), "protocol": "grouped_cv", "folds": folds,
         "n_clips": len(result.predictions)}
        for j, name in enumerate(names)
    ]
