"""A miniature workdir for trying the API, its tests and its benchmark without a study run.

Holds what `serlens run` leaves behind, in small: fine-tuning checkpoints of a tiny random
WavLM (different weights per step, real ``SpeechClassifier.save`` folders), their rows in
the ``checkpoints`` table, and optionally ``cka`` and ``probes`` rows, views refreshed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from serlens.shared.models import SpeechClassifier, create_random_encoder, load_encoder
from serlens.shared.schema import EMOTIONS
from serlens.shared.workdir import Workdir

#: The base model name written in the demo's rows.
DEMO_MODEL_NAME = "tiny-random-wavlm"


def write_demo_workdir(
    root: str | os.PathLike[str],
    *,
    train_key: str = "demo-train-key",
    steps: Sequence[int] = (0, 10),
    with_results: bool = True,
    promote: bool = True,
) -> Path:
    """Write checkpoints (one random tiny WavLM + head per step) and their store rows.

    Args:
        root: the workdir to fill (created).
        train_key: the fine-tuning run's key.
        steps: checkpoint steps; step ``i`` of the list uses encoder seed ``i``.
        with_results: also write ``cka`` rows (layers 0..4, both estimators) and ``probes``
            rows (embeddings per layer and seed 0..1, and eGeMAPS).
        promote: promote the last step (what ``/embed`` and ``/predict`` then serve).

    Returns:
        ``root`` as a path.
    """
    workdir = Path(root)
    paths = Workdir(workdir)
    store = paths.store.init()
    rows = []
    for seed, step in enumerate(steps):
        encoder_dir = create_random_encoder(paths.models / f"random-seed{seed}", seed=seed)
        encoder, bundle = load_encoder(str(encoder_dir))
        torch.manual_seed(100 + seed)
        folder = SpeechClassifier(encoder, bundle, EMOTIONS).save(
            paths.checkpoint_dir(train_key, step)
        )
        rows.append(
            {
                "train_key": train_key,
                "checkpoint_step": step,
                "run_id": f"demo-run-{seed}",
                "uri": folder.as_uri(),
                "local_path": str(folder),
                "model": DEMO_MODEL_NAME,
                "epoch": step / 10,
                "train_loss": 1.8,
                "val_loss": 1.7,
                "val_f1_macro": 0.2,
            }
        )
    store.write("checkpoints", rows, config_hash=train_key)
    if promote:
        from serlens.api.promotions import promote as promote_checkpoint

        promote_checkpoint(paths, train_key=train_key, checkpoint_step=steps[-1], promoted_by="demo")
    if with_results:
        layers = range(bundle.num_hidden_states)
        store.write(
            "cka",
            [
                {
                    "train_key": train_key,
                    "checkpoint_step": step,
                    "layer": layer,
                    "reference": "egemaps",
                    "estimator": estimator,
                    "value": 0.1 * layer + 0.01 * step,
                    "n_clips": 40,
                }
                for step in steps
                for layer in layers
                for estimator in ("linear", "debiased")
            ],
            config_hash=f"demo-{train_key}",
        )
        cell = {"protocol": "grouped_cv", "head": "linear", "task": "emotion", "weights": "best",
                "f1_std_error": 0.02, "interval": "speaker jackknife 95% (8 speakers)", "seed_std": 0.001,
                "num_classes": 6, "n_clips": 40}
        probes = [
            {
                **cell,
                "f1_macro_cell": 0.2005 + 0.01 * layer,
                "f1_low": 0.16 + 0.01 * layer,
                "f1_high": 0.24 + 0.01 * layer,
                "features": "embeddings",
                "train_key": train_key,
                "checkpoint_step": step,
                "layer": layer,
                "seed": seed,
                "f1_macro": 0.2 + 0.01 * layer + 0.001 * seed,
                "accuracy": 0.3,
                "epochs": 5,
                "val_loss": 1.5,
            }
            for step in steps
            for layer in layers
            for seed in range(2)
        ]
        probes += [
            {
                **cell,
                "f1_macro_cell": 0.25,
                "f1_low": 0.21,
                "f1_high": 0.29,
                "features": "egemaps",
                "train_key": train_key,
                "checkpoint_step": None,
                "layer": None,
                "seed": seed,
                "f1_macro": 0.25,
                "accuracy": 0.3,
                "epochs": 5,
                "val_loss": 1.5,
            }
            for seed in range(2)
        ]
        store.write("probes", probes, config_hash=f"demo-{train_key}")
    store.refresh_views()
    return workdir
