"""Checkpoint folders: writing them durably, finding the latest resume state, checking it fits.

Every checkpoint folder ``<output_dir>/step-NNNNNN`` has the same shape: the encoder
(``save_pretrained``), its feature-extractor config, the linear head and the labels
(``SpeechClassifier.save``). Checkpoint 0 is the pretrained encoder with the initial head.
The latest checkpoint also holds ``trainer_state.pt``, everything needed to resume: the
optimizer, the step, the best validation loss and the early-stopping counters, the RNG
states, the config, the metrics so far and the MLflow run id. Older checkpoints lose theirs
to save disk, once the new one is safely on disk.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serlens.shared.errors import InvalidConfigError, ModelLoadError
from serlens.shared.models import SpeechClassifier
from serlens.shared.store.files import fsync_path
from serlens.shared.workdir import CHECKPOINT_PREFIX, checkpoint_step
from serlens.trainer.config import TrainConfig

TRAINER_STATE_FILENAME = "trainer_state.pt"
FEATURE_EXTRACTOR_FILENAME = "preprocessor_config.json"
#: 2: steps are cut by the effective batch, then into micro-batches. Version 1 states resume
#: only without length bucketing (the one setting whose batches changed).
STATE_VERSION = 2
# Settings that shape the trajectory: a resumed fit must use the same values. The split of
# the effective batch into micro-batches does not (see ``TrainConfig``), so it may change.
RESUME_LOCKED_KEYS = (
    "effective_batch_size", "lr", "weight_decay", "eval_every_steps", "checkpoint_every_steps",
    "freeze_feature_encoder", "length_bucketing", "seed",
)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states, for a resume that draws the same dropout and masks."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by ``rng_state``."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_feature_extractor(folder_or_id: str) -> Any | None:
    """The encoder's feature-extractor config, kept with every checkpoint.

    Returns:
        None only for a local folder without ``preprocessor_config.json``.

    Raises:
        ModelLoadError: when the config exists but cannot be read.
    """
    from transformers import AutoFeatureExtractor

    local = Path(folder_or_id).is_dir()
    if local and not (Path(folder_or_id) / FEATURE_EXTRACTOR_FILENAME).is_file():
        return None
    try:
        return AutoFeatureExtractor.from_pretrained(folder_or_id, local_files_only=local)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read the feature-extractor config of {folder_or_id!r}: {err}") from err


def latest_state_folder(output_dir: Path) -> Path | None:
    """The checkpoint folder with the highest step that holds a resume state, if any."""
    found = [(checkpoint_step(p.name), p) for p in output_dir.glob("*")]
    resumable = [(step, p) for step, p in found if step is not None and (p / TRAINER_STATE_FILENAME).is_file()]
    return max(resumable)[1] if resumable else None


def load_state(folder: Path) -> dict[str, Any]:
    """Read a checkpoint's ``trainer_state.pt`` (our own file, holding pickled RNG states)."""
    return torch.load(folder / TRAINER_STATE_FILENAME, map_location="cpu", weights_only=False)


def _locked_settings(config: dict[str, Any]) -> dict[str, Any]:
    settings = dict(config)
    settings.setdefault("effective_batch_size", settings["batch_size"] * settings["grad_accum_steps"])
    return {key: settings[key] for key in RESUME_LOCKED_KEYS}


def check_resumable(state: dict[str, Any], identity: dict[str, Any], config: TrainConfig, folder: Path) -> None:
    """Refuse to resume a state saved for another model, data set or trajectory.

    Args:
        state: the saved state (``load_state``).
        identity: what this fit is: model, labels, train key and the data's fingerprints.
        config: this fit's settings.
        folder: where the state was found (for the message).

    Raises:
        InvalidConfigError: naming every difference.
    """
    version, now = state.get("version"), {**config.to_dict(), "effective_batch_size": config.effective_batch_size}
    if version == 1 and config.length_bucketing:
        problems = ["state version 1 with length_bucketing (this trainer cuts such batches differently)"]
    elif version not in (1, STATE_VERSION):
        problems = [f"state version {version} (this trainer: {STATE_VERSION})"]
    else:
        problems = [f"{key} {state['identity'][key]!r} (now {value!r})"
                    for key, value in identity.items() if state["identity"][key] != value]
        saved = _locked_settings(state["config"])
        problems += [f"{key}={saved[key]!r} (now {now[key]!r})" for key in RESUME_LOCKED_KEYS if saved[key] != now[key]]
    if problems:
        raise InvalidConfigError(
            f"cannot resume from {folder / TRAINER_STATE_FILENAME}: it was saved with "
            + "; ".join(problems) + ". Use another output_dir, or an empty one."
        )


def resume_state(output_dir: Path, identity: dict[str, Any], config: TrainConfig, *,
                 resume: bool) -> tuple[Path, dict[str, Any]] | tuple[None, None]:
    """The latest checkpoint folder with a resume state, and that state; ``(None, None)`` if none.

    Raises:
        InvalidConfigError: when there is a state and ``resume`` is False, or it does not fit
            this fit (``check_resumable``).
    """
    folder = latest_state_folder(output_dir)
    if folder is None:
        return None, None
    if not resume:
        raise InvalidConfigError(f"{output_dir} holds checkpoints of an earlier fit; "
                                 "pass resume=True or use an empty folder")
    state = load_state(folder)
    check_resumable(state, identity, config, folder)
    return folder, state


def write_checkpoint(classifier: SpeechClassifier, extractor: Any | None, trainer_state: dict[str, Any],
                     folder: Path) -> None:
    """Write a checkpoint durably, then drop the resume states of older checkpoints.

    The folder is written under a temporary name, its files and itself fsynced, renamed into
    place and its parent fsynced: a crash leaves either the previous checkpoint with its
    resume state, or the new one.
    """
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    classifier.save(tmp)
    if extractor is not None:
        extractor.save_pretrained(tmp)
    torch.save({**trainer_state, "version": STATE_VERSION}, tmp / TRAINER_STATE_FILENAME)
    for path in tmp.rglob("*"):
        fsync_path(path)
    fsync_path(tmp)
    if folder.exists():
        shutil.rmtree(folder)  # a step redone after resuming from an earlier checkpoint
    os.replace(tmp, folder)
    fsync_path(folder.parent)
    for other in folder.parent.glob(f"{CHECKPOINT_PREFIX}*/{TRAINER_STATE_FILENAME}"):
        if other.parent != folder:
            other.unlink()
