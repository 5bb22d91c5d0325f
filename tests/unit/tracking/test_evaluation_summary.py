"""The analyses' summary per checkpoint, by hand."""

import pytest

from serlens.pipeline.evaluation import summarize
from serlens.shared.tracking import run_name


def test_summary_picks_the_best_layer_per_checkpoint_and_estimator():
    cka = [
        {"checkpoint_step": 0, "layer": 0, "estimator": "linear", "value": 0.2},
        {"checkpoint_step": 0, "layer": 1, "estimator": "linear", "value": 0.4},
        {"checkpoint_step": 0, "layer": 1, "estimator": "debiased", "value": 0.1},
        {"checkpoint_step": 8, "layer": 0, "estimator": "linear", "value": 0.3},
        {"checkpoint_step": 8, "layer": 1, "estimator": "linear", "value": None},
    ]
    common = {"features": "embeddings", "head": "linear", "weights": "best"}
    probes = [
        {**common, "checkpoint_step": 8, "layer": 0, "task": "emotion", "f1_macro_cell": 0.5},
        {**common, "checkpoint_step": 8, "layer": 1, "task": "emotion", "f1_macro_cell": 0.7},
        {**common, "checkpoint_step": 8, "layer": 1, "task": "control", "f1_macro_cell": 0.2},
        {**common, "checkpoint_step": 8, "layer": 2, "task": "emotion", "f1_macro_cell": 0.9, "head": "mlp"},
        {**common, "checkpoint_step": None, "layer": None, "task": "emotion", "f1_macro_cell": 0.99,
         "features": "egemaps"},
    ]
    assert summarize(cka, probes) == {
        0: {"cka_debiased_max": 0.1, "cka_debiased_best_layer": 1.0, "cka_linear_max": 0.4,
            "cka_linear_best_layer": 1.0},
        8: {"cka_linear_max": 0.3, "cka_linear_best_layer": 0.0, "probe_f1_macro_max": 0.7,
            "probe_best_layer": 1.0, "probe_selectivity": pytest.approx(0.5)},
    }


@pytest.mark.parametrize(("model", "dataset", "lr", "expected"), [
    ("microsoft/wavlm-base-plus", "crema-d", 5e-5, "wavlm-base-plus · crema-d · lr 5e-5 · 3f2a"),
    ("/data/models/tiny-random-wavlm/", None, 2e-3, "tiny-random-wavlm · lr 0.002 · 3f2a"),
    ("models:/serlens-ser/3", "demo", 1e-5, "serlens-ser/3 · demo · lr 1e-5 · 3f2a"),
    ("serlens:tiny-random-wavlm", "demo", 1e-3, "tiny-random-wavlm · demo · lr 0.001 · 3f2a"),
])
def test_run_names_people_can_read(model, dataset, lr, expected):
    assert run_name(model=model, dataset=dataset, lr=lr, key="3f2a9c0d") == expected
