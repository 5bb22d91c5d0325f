"""Fine-tune a speech encoder for emotion recognition; save checkpoints along the way.

``TrainerService.fit`` reads top to bottom like nanoGPT's ``train.py``: check the data,
seed, build the model and optimizer (or restore them from the latest checkpoint), then
loop over optimizer steps, validating, checkpointing and early stopping as it goes.

Every checkpoint folder ``<output_dir>/step-NNNNNN`` has the same shape: the encoder
(``save_pretrained``), its feature-extractor config, the linear head and the labels
(``SpeechClassifier.save``). Checkpoint 0 is the pretrained encoder with the initial
head. The latest checkpoint also holds ``trainer_state.pt``: the optimizer, step, early
stopping counters, RNG states, config, metrics and MLflow run id, i.e. everything needed
to resume; older checkpoints lose theirs to save disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from serlens.shared import tracking
from serlens.shared.audio import TARGET_SAMPLING_RATE, read_wav
from serlens.shared.errors import InvalidConfigError, InvalidManifestError, ModelLoadError
from serlens.shared.models import (
    HEAD_FILENAME,
    ModelBundle,
    SpeechClassifier,
    length_groups,
    load_encoder,
    prepare_batch,
)
from serlens.shared.tracking import TrackingConfig
from serlens.shared.workdir import CHECKPOINT_PREFIX, checkpoint_dirname, checkpoint_step
from serlens.trainer import core
from serlens.trainer.config import TrainConfig
from serlens.trainer.figures import plot_training

log = logging.getLogger(__name__)

TRAINER_STATE_FILENAME = "trainer_state.pt"
STATE_VERSION = 1
FIGURE_STEM = "training"
# Settings that shape the trajectory: a resumed fit must use the same values.
RESUME_LOCKED_KEYS = (
    "batch_size", "grad_accum_steps", "lr", "weight_decay", "eval_every_steps",
    "checkpoint_every_steps", "freeze_feature_encoder", "length_bucketing", "seed",
)


@dataclass(frozen=True)
class TrainClip:
    """One training or validation clip.

    Attributes:
        clip_id: unique within its set.
        path: a 16 kHz mono WAV, already loudness-normalised.
        label: class name; one of the ``labels`` given to ``fit``.
    """

    clip_id: str
    path: str
    label: str


@dataclass(frozen=True)
class CheckpointInfo:
    """A saved checkpoint.

    Attributes:
        step: optimizer steps done (0 = the pretrained encoder and the initial head).
        local_path: the checkpoint folder.
        uri: ``runs:/<run_id>/checkpoints/step-NNNNNN`` when logged to MLflow, else the
            folder's file URI.
        epoch: epochs done at ``step``.
        train_loss: mean training loss over the optimizer steps since the previous checkpoint
            (None for checkpoint 0).
        val_loss: validation cross-entropy at ``step``.
        val_f1_macro: validation macro-F1 at ``step``.
    """

    step: int
    local_path: str
    uri: str
    epoch: float
    train_loss: float | None
    val_loss: float
    val_f1_macro: float


@dataclass(frozen=True)
class TrainResult:
    """What a fit produced.

    Attributes:
        run_id: the MLflow run.
        checkpoints: every checkpoint, by step.
        metrics: rows ``{step, epoch, name, value}`` for ``train_loss``, ``lr`` (every step),
            ``val_loss``, ``val_f1_macro``, ``val_accuracy`` (every validation).
        stopped_early: early stopping ended the fit.
        steps: optimizer steps done.
        epochs: epochs done.
        seconds: wall-clock time spent fitting, summed over resumed sessions, in seconds.
    """

    run_id: str
    checkpoints: tuple[CheckpointInfo, ...]
    metrics: tuple[dict, ...]
    stopped_early: bool
    steps: int
    epochs: float
    seconds: float


class _ClipDataset(torch.utils.data.Dataset):
    """Reads one clip's samples and class index."""

    def __init__(self, clips: Sequence[TrainClip], labels: Sequence[str]) -> None:
        self.paths = [c.path for c in clips]
        self.targets = [list(labels).index(c.label) for c in clips]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        signal, _ = read_wav(self.paths[index])
        return signal, self.targets[index]


@dataclass(frozen=True)
class _Collate:
    """Standardise, pad and mask a list of clips (a class, so loader workers can pickle it)."""

    bundle: ModelBundle

    def __call__(self, items: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, ...]:
        values, mask = prepare_batch([signal for signal, _ in items], self.bundle)
        return values, mask, torch.tensor([target for _, target in items], dtype=torch.long)


def _check_clips(clips: Sequence[TrainClip], labels: Sequence[str], name: str) -> list[int]:
    """Check a clip set, naming every problem at once; return each clip's length in samples.

    Raises:
        InvalidConfigError: when the set is empty.
        InvalidManifestError: naming every clip with an unknown label, a duplicate id, or a
            file that is missing, unreadable, not mono or not at 16 kHz.
    """
    if not clips:
        raise InvalidConfigError(f"the {name} is empty: fine-tuning needs at least one clip")
    known, seen = set(labels), set()
    problems: list[tuple[str, str]] = []
    lengths: list[int] = []
    for clip in clips:
        culprit = f"{clip.clip_id} ({clip.path})"
        if clip.label not in known:
            problems.append((culprit, f"label {clip.label!r} is not one of {list(labels)}"))
        if clip.clip_id in seen:
            problems.append((culprit, "duplicate clip_id"))
        seen.add(clip.clip_id)
        try:
            info = sf.info(clip.path)
        except (OSError, RuntimeError) as err:
            missing = not Path(clip.path).is_file()
            problems.append((culprit, "file not found" if missing else f"unreadable audio: {err}"))
            lengths.append(0)
            continue
        if info.samplerate != TARGET_SAMPLING_RATE or info.channels != 1:
            problems.append((culprit, f"{info.samplerate} Hz, {info.channels} channel(s); expected "
                                      f"{TARGET_SAMPLING_RATE} Hz mono (normalise it first)"))
        lengths.append(int(info.frames))
    if problems:
        raise InvalidManifestError(problems, source=name)
    return lengths


def _fingerprint(clips: Sequence[TrainClip]) -> str:
    """Hash a clip set (ids, files and labels, in order) for resume checks."""
    payload = json.dumps([[c.clip_id, c.path, c.label] for c in clips])
    return hashlib.sha256(payload.encode()).hexdigest()


def _model_key(model: str) -> str:
    return str(Path(model).resolve()) if Path(model).is_dir() else model


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _feature_extractor(name_or_path: str) -> Any | None:
    """Load the encoder's feature-extractor config, kept with every checkpoint (None if absent)."""
    from transformers import AutoFeatureExtractor

    local = Path(name_or_path).is_dir()
    try:
        return AutoFeatureExtractor.from_pretrained(name_or_path, local_files_only=local)
    except (OSError, ValueError):
        return None


def _latest_state_folder(output_dir: Path) -> Path | None:
    """Find the checkpoint folder with the highest step that holds a resume state, if any."""
    found = [(checkpoint_step(p.name), p) for p in output_dir.glob("*")]
    resumable = [(step, p) for step, p in found
                 if step is not None and (p / TRAINER_STATE_FILENAME).is_file()]
    return max(resumable)[1] if resumable else None


class TrainerService:
    """Fine-tunes ``SpeechClassifier`` models and tracks each fit as one MLflow run.

    Args:
        config: fine-tuning settings.
        tracking: where MLflow runs and artifacts go.

    Raises:
        InvalidConfigError: when ``device="cuda"`` and no CUDA device is available.
    """

    def __init__(self, *, config: TrainConfig, tracking: TrackingConfig) -> None:
        self.config = config
        self.tracking = tracking
        has_cuda = torch.cuda.is_available()
        if config.device == "cuda" and not has_cuda:
            raise InvalidConfigError("device='cuda' but torch sees no CUDA device; "
                                     "use device='auto' or 'cpu'")
        use_cuda = config.device == "cuda" or (config.device == "auto" and has_cuda)
        self.device = torch.device("cuda" if use_cuda else "cpu")
        bf16 = config.precision == "bf16" or (config.precision == "auto" and use_cuda)
        self.autocast_dtype = torch.bfloat16 if bf16 else None

    def fit(
        self,
        *,
        model: str,
        train: Sequence[TrainClip],
        validation: Sequence[TrainClip],
        labels: Sequence[str],
        output_dir: Path,
        train_key: str,
        resume: bool = True,
        progress: bool = True,
    ) -> TrainResult:
        """Fine-tune ``model`` on ``train``, validating on ``validation``, into ``output_dir``.

        Args:
            model: a local encoder folder or a hub id.
            train: training clips.
            validation: validation clips (early stopping watches their loss).
            labels: class names, in class-index order.
            output_dir: where the ``step-NNNNNN`` checkpoint folders go.
            train_key: identifies this fit (config + data) in tables and MLflow.
            resume: continue from the latest ``trainer_state.pt`` in ``output_dir``, if any.
            progress: show a progress bar over optimizer steps.

        Returns:
            The run, its checkpoints and its metrics.

        Raises:
            InvalidConfigError: empty sets or labels; a resume whose model, labels, data or
                trajectory settings differ from the saved state; checkpoints in ``output_dir``
                with ``resume=False``.
            InvalidManifestError: clips with unknown labels, or missing or unusable files
                (every one named).
            ModelLoadError: when the model cannot be loaded.
        """
        cfg, device, started = self.config, self.device, time.perf_counter()

        # -------------------------------------------------------------- data
        labels = list(labels)
        if not labels or len(set(labels)) != len(labels):
            raise InvalidConfigError(f"labels must be distinct and non-empty, got {labels}")
        train_lengths = _check_clips(train, labels, "train set")
        val_lengths = _check_clips(validation, labels, "validation set")
        steps_per_epoch = core.optimizer_steps_per_epoch(len(train), cfg.batch_size,
                                                         cfg.grad_accum_steps)
        max_steps = cfg.max_epochs * steps_per_epoch
        if cfg.max_steps is not None:
            max_steps = min(max_steps, cfg.max_steps)
        identity = {"model": _model_key(model), "labels": labels, "train_key": train_key,
                    "train_set": _fingerprint(train), "validation_set": _fingerprint(validation)}

        # -------------------------------------------------------------- saved state
        output_dir = Path(output_dir).resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        state_folder = _latest_state_folder(output_dir)
        state: dict[str, Any] | None = None
        if state_folder is not None:
            if not resume:
                raise InvalidConfigError(f"{output_dir} holds checkpoints of an earlier fit; "
                                         "pass resume=True or use an empty folder")
            # Our own file, holding pickled RNG states: not loadable with weights_only.
            state = torch.load(state_folder / TRAINER_STATE_FILENAME, map_location="cpu",
                               weights_only=False)
            self._check_resumable(state, identity, state_folder)

        # -------------------------------------------------------------- model and optimizer
        _seed_everything(cfg.seed)
        if state_folder is None:
            encoder, bundle = load_encoder(model, device=device)
        else:
            encoder, _ = load_encoder(str(state_folder), device=device)
            bundle = ModelBundle(**state["bundle"])
        if bundle.sampling_rate != TARGET_SAMPLING_RATE:
            raise ModelLoadError(f"{model!r} expects {bundle.sampling_rate} Hz audio; "
                                 f"clips are {TARGET_SAMPLING_RATE} Hz")
        extractor = _feature_extractor(model if state_folder is None else str(state_folder))
        if cfg.freeze_feature_encoder:
            # The CNN feature encoder stays as pre-trained, as in WavLM / wav2vec 2.0 fine-tuning.
            for parameter in encoder.feature_extractor.parameters():
                parameter.requires_grad = False
        classifier = SpeechClassifier(encoder, bundle, labels).to(device)
        trainable = [p for p in classifier.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        early = core.EarlyStopping(patience=cfg.early_stopping_patience,
                                   min_delta=cfg.early_stopping_min_delta)
        step, metrics, checkpoints, seconds_before = 0, [], [], 0.0
        if state_folder is not None:
            head = torch.load(state_folder / HEAD_FILENAME, map_location=device, weights_only=True)
            classifier.head.load_state_dict(head)
            optimizer.load_state_dict(state["optimizer"])
            early.load_state_dict(state["early_stopping"])
            step, seconds_before = state["step"], state["seconds"]
            metrics, checkpoints = list(state["metrics"]), [dict(c) for c in state["checkpoints"]]

        # -------------------------------------------------------------- MLflow run
        run_id = self._open_run(state, bundle=bundle, identity=identity, num_train=len(train),
                                num_val=len(validation), steps_per_epoch=steps_per_epoch)
        # A new run for an old state (its run was deleted) gets the history replayed.
        pending = list(metrics) if state is not None and state["run_id"] != run_id else []

        def record(name: str, value: float) -> None:
            row = {"step": step, "epoch": core.epoch_at(step, steps_per_epoch), "name": name,
                   "value": float(value)}
            metrics.append(row)
            pending.append(row)

        def flush() -> None:
            tracking.log_metric_rows(self.tracking, run_id, pending)
            pending.clear()

        def save_checkpoint(scores: dict[str, float]) -> None:
            folder = output_dir / checkpoint_dirname(step)
            since = checkpoints[-1]["step"] if checkpoints else step
            losses = [m["value"] for m in metrics
                      if m["name"] == "train_loss" and since < m["step"] <= step]
            checkpoints.append({
                "step": step, "local_path": str(folder),
                "epoch": core.epoch_at(step, steps_per_epoch),
                "train_loss": float(np.mean(losses)) if losses else None,
                "val_loss": scores["val_loss"], "val_f1_macro": scores["val_f1_macro"],
            })
            trainer_state = {
                "version": STATE_VERSION, "step": step, "run_id": run_id, "identity": identity,
                "bundle": asdict(bundle), "config": cfg.to_dict(),
                "optimizer": optimizer.state_dict(), "early_stopping": early.state_dict(),
                "rng": _rng_state(), "metrics": metrics, "checkpoints": checkpoints,
                "seconds": seconds_before + time.perf_counter() - started,
            }
            self._write_checkpoint(classifier, extractor, trainer_state, folder)
            if cfg.log_checkpoints_to_mlflow:
                tracking.log_folder(self.tracking, run_id, folder, f"checkpoints/{folder.name}",
                                    exclude={TRAINER_STATE_FILENAME})
            flush()

        bar = tqdm(total=max_steps, initial=min(step, max_steps), disable=not progress,
                   unit="step", desc=f"fine-tune {train_key}", dynamic_ncols=True)
        try:
            if state is None:
                # Step 0: the pretrained encoder and the initial head, validated and saved like
                # any other checkpoint.
                scores = self._validate(classifier, validation, val_lengths, labels, bundle)
                for name, value in scores.items():
                    record(name, value)
                save_checkpoint(scores)
            else:
                if cfg.log_checkpoints_to_mlflow:
                    self._sync_checkpoint_artifacts(run_id, checkpoints)
                flush()
                _set_rng_state(state["rng"])

            # ---------------------------------------------------------- training loop
            train_set = _ClipDataset(train, labels)
            classifier.train()
            while step < max_steps and not early.stopped:
                # Each epoch's order is a function of (seed, epoch): a resumed fit skips the
                # optimizer steps already done and sees the same batches as an uninterrupted one.
                epoch_index = step // steps_per_epoch
                batches = core.epoch_batches(train_lengths, cfg.batch_size, seed=cfg.seed,
                                             epoch=epoch_index,
                                             bucket_by_length=cfg.length_bucketing)
                groups = core.accumulation_groups(batches, cfg.grad_accum_steps)
                groups = groups[step % steps_per_epoch:]
                loader = self._loader(train_set, [b for g in groups for b in g], bundle,
                                      seed=cfg.seed * 100_003 + epoch_index)
                micro_batches = iter(loader)
                for group in groups:
                    clips_in_step = sum(len(b) for b in group)
                    # Summed on the device: one host sync per optimizer step, not per micro-batch.
                    step_loss_sum = torch.zeros((), device=device)
                    for _ in group:
                        values, mask, targets = (t.to(device, non_blocking=True)
                                                 for t in next(micro_batches))
                        with self._autocast():
                            logits = classifier(values, mask)
                        loss = F.cross_entropy(logits.float(), targets)
                        # Weighting by clips makes the summed gradient the mean over the step's
                        # clips, also for a short last micro-batch or accumulation of an epoch.
                        weight = len(targets) / clips_in_step
                        (loss * weight).backward()
                        step_loss_sum += loss.detach() * weight
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    step_loss = step_loss_sum.item()
                    record("train_loss", step_loss)
                    record("lr", optimizer.param_groups[0]["lr"])
                    bar.update(1)

                    is_eval = step % cfg.eval_every_steps == 0
                    is_checkpoint = step % cfg.checkpoint_every_steps == 0
                    if is_eval or is_checkpoint:
                        scores = self._validate(classifier, validation, val_lengths, labels, bundle)
                        for name, value in scores.items():
                            record(name, value)
                        if is_eval:  # an extra validation for an off-grid checkpoint does not count
                            early.update(scores["val_loss"], step)
                        bar.set_postfix(train_loss=f"{step_loss:.3f}",
                                        val_loss=f"{scores['val_loss']:.3f}",
                                        f1=f"{scores['val_f1_macro']:.3f}")
                        flush()
                    if is_checkpoint:
                        save_checkpoint(scores)
                    if step >= max_steps or early.stopped:
                        break
            flush()
            bar.close()

            # ---------------------------------------------------------- wrap up
            result = TrainResult(
                run_id=run_id,
                checkpoints=tuple(self._checkpoint_info(c, run_id) for c in checkpoints),
                metrics=tuple(metrics),
                stopped_early=early.stopped,
                steps=step,
                epochs=core.epoch_at(step, steps_per_epoch),
                seconds=seconds_before + time.perf_counter() - started,
            )
            short_name = Path(model).name if Path(model).is_dir() else model
            figure = plot_training(metrics, [c.step for c in result.checkpoints],
                                   output_dir / FIGURE_STEM,
                                   title=f"Fine-tuning {short_name} ({train_key})",
                                   early_stop_step=step if early.stopped else None)
            for path in figure:
                tracking.log_file(self.tracking, run_id, path, "figures")
            tracking.set_tags(self.tracking, run_id,
                              {"serlens.steps": step, "serlens.stopped_early": early.stopped})
            tracking.end_run(self.tracking, run_id, "FINISHED")
            return result
        except BaseException as err:
            bar.close()
            status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
            tracking.end_run(self.tracking, run_id, status)
            raise

    # ------------------------------------------------------------------ helpers

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _loader(self, dataset: _ClipDataset, batches: list[list[int]], bundle: ModelBundle, *,
                seed: int) -> torch.utils.data.DataLoader:
        # The loader's own generator keeps it from drawing on the global RNG (which would make
        # a resumed fit's dropout and masks differ from an uninterrupted one's).
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, collate_fn=_Collate(bundle),
            num_workers=self.config.num_loader_workers, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),
        )

    @torch.no_grad()
    def _validate(self, classifier: SpeechClassifier, clips: Sequence[TrainClip],
                  lengths: list[int], labels: list[str], bundle: ModelBundle) -> dict[str, float]:
        """Loss, macro-F1 and accuracy on the validation clips (eval mode, no gradients)."""
        was_training = classifier.training
        classifier.eval()
        dataset = _ClipDataset(clips, labels)
        batches = length_groups(lengths, bundle, self.config.batch_size)
        loss_sum, truth, predicted = 0.0, [], []
        for values, mask, targets in self._loader(dataset, batches, bundle, seed=0):
            values, mask, targets = (t.to(self.device) for t in (values, mask, targets))
            with self._autocast():
                logits = classifier(values, mask).float()
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            truth.extend(targets.tolist())
            predicted.extend(logits.argmax(-1).tolist())
        classifier.train(was_training)
        scores = core.classification_scores(truth, predicted, len(labels))
        return {"val_loss": loss_sum / len(truth), "val_f1_macro": scores["f1_macro"],
                "val_accuracy": scores["accuracy"]}

    @staticmethod
    def _write_checkpoint(classifier: SpeechClassifier, extractor: Any | None,
                          trainer_state: dict[str, Any], folder: Path) -> None:
        """Write a checkpoint under a temporary name, rename it into place, drop older states."""
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        classifier.save(tmp)
        if extractor is not None:
            extractor.save_pretrained(tmp)
        torch.save(trainer_state, tmp / TRAINER_STATE_FILENAME)
        if folder.exists():
            shutil.rmtree(folder)  # a step redone after resuming from an earlier checkpoint
        os.replace(tmp, folder)
        for other in folder.parent.glob(f"{CHECKPOINT_PREFIX}*/{TRAINER_STATE_FILENAME}"):
            if other.parent != folder:
                other.unlink()

    def _open_run(self, state: dict[str, Any] | None, *, bundle: ModelBundle,
                  identity: dict[str, Any], num_train: int, num_val: int,
                  steps_per_epoch: int) -> str:
        """Reuse the saved run when resuming (if it still exists), else start one with params."""
        if state is not None and tracking.run_exists(self.tracking, state["run_id"]):
            run_id = state["run_id"]
            tracking.reopen_run(self.tracking, run_id)
            changed = {f"serlens.resume.{k}": v for k, v in self.config.to_dict().items()
                       if state["config"].get(k) != v}
            tracking.set_tags(self.tracking, run_id,
                              {"serlens.resumed_from_step": state["step"], **changed})
            return run_id
        if state is not None:
            log.warning("MLflow run %s of %s is gone; starting a new run and replaying its history",
                        state["run_id"], identity["train_key"])
        train_key = identity["train_key"]
        run_id = tracking.start_run(self.tracking, run_name=train_key, tags={
            "serlens": "trainer", "serlens.train_key": train_key, "serlens.model": bundle.identity,
            "serlens.random_init": bundle.random_init,
        })
        tracking.log_params(self.tracking, run_id, {
            "train": self.config.to_dict(),
            "model": {**asdict(bundle), "requested": identity["model"]},
            "data": {"num_train_clips": num_train, "num_validation_clips": num_val,
                     "labels": identity["labels"], "steps_per_epoch": steps_per_epoch,
                     "effective_batch_size": self.config.effective_batch_size},
            "train_key": train_key,
        })
        return run_id

    def _sync_checkpoint_artifacts(self, run_id: str, checkpoints: list[dict[str, Any]]) -> None:
        """Upload the checkpoints that a crash (or a new run) left out of MLflow."""
        for checkpoint in checkpoints:
            folder = Path(checkpoint["local_path"])
            artifact_path = f"checkpoints/{folder.name}"
            if folder.is_dir() and not tracking.has_artifacts(self.tracking, run_id, artifact_path):
                tracking.log_folder(self.tracking, run_id, folder, artifact_path,
                                    exclude={TRAINER_STATE_FILENAME})

    def _checkpoint_info(self, checkpoint: dict[str, Any], run_id: str) -> CheckpointInfo:
        folder = Path(checkpoint["local_path"])
        if self.config.log_checkpoints_to_mlflow:
            uri = tracking.artifact_uri(run_id, f"checkpoints/{folder.name}")
        else:
            uri = folder.as_uri()
        return CheckpointInfo(uri=uri, **checkpoint)

    def _check_resumable(self, state: dict[str, Any], identity: dict[str, Any],
                         folder: Path) -> None:
        """Refuse to resume a state saved for another model, data set or trajectory."""
        if state.get("version") != STATE_VERSION:
            problems = [f"state version {state.get('version')} (this trainer: {STATE_VERSION})"]
        else:
            problems = [f"{key} {state['identity'][key]!r} (now {value!r})"
                        for key, value in identity.items() if state["identity"][key] != value]
            now = self.config.to_dict()
            problems += [f"{key}={state['config'][key]!r} (now {now[key]!r})"
                         for key in RESUME_LOCKED_KEYS if state["config"][key] != now[key]]
        if problems:
            raise InvalidConfigError(
                f"cannot resume from {folder / TRAINER_STATE_FILENAME}: it was saved with "
                + "; ".join(problems) + ". Use another output_dir, or an empty one."
            )
