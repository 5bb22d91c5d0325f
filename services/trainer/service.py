"""Fine-tune a speech encoder for emotion recognition; save checkpoints along the way.

``TrainerService.fit`` reads top to bottom like nanoGPT's ``train.py``: check the data, seed,
build the model and optimizer (or restore them and a ``TrainState`` from the latest
checkpoint), open the MLflow run, then loop over optimizer steps, validating, checkpointing and
early stopping as it goes. Checkpoint I/O lives in ``checkpoints``, data loading and the feed
to the device in ``data``, the MLflow run in ``runs``; the trainer draws no figures (the report
draws the training curves from the store).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from serlens.shared.audio import TARGET_SAMPLING_RATE
from serlens.shared.console import progress_bar
from serlens.shared.errors import ModelLoadError
from serlens.shared.models import (
    HEAD_FILENAME,
    ModelBundle,
    SpeechClassifier,
    length_groups,
    load_encoder,
    resolve_device,
)
from serlens.shared.tracking import TrackingConfig
from serlens.shared.tracking import run_name as tracking_run_name
from serlens.shared.workdir import checkpoint_dirname
from serlens.trainer import checkpoints, core
from serlens.trainer.config import TrainConfig
from serlens.trainer.data import (
    ClipDataset,
    DeviceFeeder,
    TrainClip,
    TrainPlan,
    batches_on_device,
    fingerprint,
    loader,
    manifest_datasets,
)
from serlens.trainer.runs import TrainRun
from serlens.trainer.state import CheckpointInfo, TrainResult, TrainState

__all__ = [
    "CheckpointInfo", "TrainClip", "TrainResult", "TrainerService", "accumulate_gradients", "freeze_feature_encoder",
]


def freeze_feature_encoder(encoder: nn.Module) -> None:
    """Keep the CNN feature encoder as pre-trained, without building its autograd graph.

    Hugging Face's own ``freeze_feature_encoder()`` also stops the CNN from marking its input
    as needing gradients (``requires_grad`` alone still records the CNN's graph). An encoder
    without that method gets the same effect from running its CNN under ``torch.no_grad``.
    """
    freeze = getattr(encoder, "freeze_feature_encoder", None)
    if callable(freeze):
        freeze()
        return
    cnn = cast(nn.Module, encoder.feature_extractor)
    for parameter in cnn.parameters():
        parameter.requires_grad = False
    cnn.forward = torch.no_grad()(cnn.forward)


def accumulate_gradients(classifier: SpeechClassifier, micro_batches: Iterable[tuple[torch.Tensor, ...]], *,
                         clips_in_step: int,
                         autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
                         ) -> torch.Tensor:
    """Forward and backward over one optimizer step's micro-batches, summing their gradients.

    Each micro-batch's mean cross-entropy is weighted by its share of the step's clips, so the
    summed gradient is the mean over the step's clips, however the step is split (also for a
    short last step of an epoch).

    Args:
        classifier: the model, in training mode.
        micro_batches: ``(values, attention_mask, targets)`` on the model's device.
        clips_in_step: clips in all the micro-batches together.
        autocast: the mixed-precision context of each forward pass.

    Returns:
        The step's mean training loss, still on the device (no host sync).
    """
    step_loss = torch.zeros((), device=next(classifier.parameters()).device)
    for values, mask, targets in micro_batches:
        with autocast():
            logits = classifier(values, mask)
        loss = F.cross_entropy(logits.float(), targets)
        weight = len(targets) / clips_in_step
        (loss * weight).backward()
        step_loss += loss.detach() * weight
    return step_loss


@dataclass
class _Model:
    """What a fit trains: the classifier, its optimizer, and how batches reach it."""

    classifier: SpeechClassifier
    bundle: ModelBundle
    extractor: Any | None
    optimizer: torch.optim.Optimizer
    feeder: DeviceFeeder


@dataclass
class _Fit:
    """Everything one fit works with; ``state`` is all that changes from step to step."""

    model: _Model
    plan: TrainPlan
    state: TrainState
    run: TrainRun
    identity: dict[str, Any]
    output_dir: Path
    train_set: ClipDataset
    val_set: ClipDataset


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
        self.device = resolve_device(config.device)
        use_cuda = self.device.type == "cuda"
        bf16 = config.precision == "bf16" or (config.precision == "auto" and use_cuda)
        self.autocast_dtype = torch.bfloat16 if bf16 else None

    def fit(self, *, model: str, train: Sequence[TrainClip], validation: Sequence[TrainClip],
            labels: Sequence[str], output_dir: Path, train_key: str, resume: bool = True,
            progress: bool = True, run_name: str | None = None) -> TrainResult:
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
            run_name: the MLflow run's name (default: model, learning rate and key, see
                ``tracking.run_name``).

        Returns:
            The run, its checkpoints and its metrics.

        Raises:
            InvalidConfigError: empty sets or labels; a resume whose model, labels, data or
                trajectory settings differ from the saved state; checkpoints in ``output_dir``
                with ``resume=False``.
            InvalidManifestError: clips with unknown labels, or missing or unusable files
                (every one named).
            ModelLoadError: when the model cannot be loaded.
            TrackingError: when MLflow cannot be reached at the start, or has not caught up
                by the end (the checkpoints are saved then; a rerun catches up).
        """
        cfg = self.config
        # -------------------------------------------------------------- data and saved state
        plan = TrainPlan.build(cfg, train, validation, labels)
        identity = {"model": str(Path(model).resolve()) if Path(model).is_dir() else model,
                    "labels": plan.labels, "train_key": train_key,
                    "train_set": fingerprint(train), "validation_set": fingerprint(validation)}
        output_dir = Path(output_dir).resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        saved_folder, saved = checkpoints.resume_state(output_dir, identity, cfg, resume=resume)

        # -------------------------------------------------------------- model, optimizer, state, run
        checkpoints.seed_everything(cfg.seed)
        model_parts = self._build(model, saved_folder, saved, plan.labels)
        state = TrainState(steps_per_epoch=plan.steps_per_epoch,
                           early=core.EarlyStopping(patience=cfg.early_stopping_patience,
                                                    min_delta=cfg.early_stopping_min_delta))
        if saved is not None:
            state.load_dict(saved)
        run = TrainRun.open(self.tracking, cfg, saved, bundle=model_parts.bundle, identity=identity, params={
            "num_train_clips": len(train), "num_validation_clips": len(validation), "labels": plan.labels,
            "steps_per_epoch": plan.steps_per_epoch, "effective_batch_size": cfg.effective_batch_size},
            datasets=manifest_datasets(train, validation),
            run_name=run_name or tracking_run_name(model=model, dataset=None, lr=cfg.lr, key=train_key))
        state.run_id = run.run_id
        fit = _Fit(model_parts, plan, state, run, identity, output_dir,
                   train_set=ClipDataset(train, plan.labels), val_set=ClipDataset(validation, plan.labels))
        bar = progress_bar(total=plan.max_steps, initial=min(state.step, plan.max_steps), disable=not progress,
                           unit="step", desc=f"fine-tune {train_key}")
        try:
            if saved is None:  # step 0: the pretrained encoder and the initial head, like any checkpoint
                self._checkpoint(fit, self._evaluate(fit))
            else:
                run.catch_up(state)
                checkpoints.set_rng_state(saved["rng"])

            # ---------------------------------------------------------- training loop
            model_parts.classifier.train()
            while state.step < plan.max_steps and not state.early.stopped:
                self._train_until_epoch_end(fit, bar)
            run.log_metrics(state.settle())
            bar.close()
            run.finish(state)
            return self._result(fit)
        except BaseException as err:
            bar.close()
            run.fail(err)
            raise

    def _train_until_epoch_end(self, fit: _Fit, bar: Any) -> None:
        """Train to the end of the current epoch, validating, checkpointing and early stopping."""
        cfg, state = self.config, fit.state
        steps = fit.plan.steps_from(state.step, cfg)
        epoch_index = state.step // fit.plan.steps_per_epoch
        micro_batches = batches_on_device(fit.model.feeder, loader(
            fit.train_set, [batch for step in steps for batch in step],
            num_workers=cfg.num_loader_workers, seed=cfg.seed * 100_003 + epoch_index,
            normalize=fit.model.feeder.host_normalizes))
        for step in steps:
            self._train_step(fit, (next(micro_batches) for _ in step), clips_in_step=sum(len(b) for b in step))
            bar.update(1)
            is_eval = state.step % cfg.eval_every_steps == 0
            is_checkpoint = state.step % cfg.checkpoint_every_steps == 0
            if is_eval or is_checkpoint:
                scores = self._evaluate(fit)
                if is_eval:  # an extra validation for an off-grid checkpoint does not count
                    state.early.update(scores["val_loss"], state.step)
                bar.set_postfix(val_loss=f"{scores['val_loss']:.3f}", f1=f"{scores['val_f1_macro']:.3f}")
            if is_checkpoint:
                self._checkpoint(fit, scores)
            if state.step >= fit.plan.max_steps or state.early.stopped:
                return

    # ------------------------------------------------------------------ building

    def _build(self, model: str, saved_folder: Path | None, saved: dict[str, Any] | None,
               labels: list[str]) -> _Model:
        """Load the encoder (from the saved checkpoint when resuming), add the head, make the optimizer.

        Raises:
            ModelLoadError: when the model cannot be loaded or expects another sampling rate.
        """
        source = model if saved_folder is None else str(saved_folder)
        encoder, bundle = load_encoder(source, device=self.device)
        if saved is not None:
            bundle = ModelBundle(**saved["bundle"])
        if bundle.sampling_rate != TARGET_SAMPLING_RATE:
            raise ModelLoadError(f"{model!r} expects {bundle.sampling_rate} Hz audio; "
                                 f"clips are {TARGET_SAMPLING_RATE} Hz")
        if self.config.freeze_feature_encoder:
            freeze_feature_encoder(encoder)  # as in WavLM / wav2vec 2.0 fine-tuning
        classifier = SpeechClassifier(encoder, bundle, labels).to(self.device)
        if self.config.fast_attention:
            classifier.use_fast_forward(compile_layers=self.config.compile_layers)
        trainable = [p for p in classifier.parameters() if p.requires_grad]
        # The fused kernel updates every parameter in one launch; CUDA only.
        optimizer = torch.optim.AdamW(trainable, lr=self.config.lr, weight_decay=self.config.weight_decay,
                                      fused=True if self.device.type == "cuda" else None)
        if saved_folder is not None and saved is not None:
            head = torch.load(saved_folder / HEAD_FILENAME, map_location=self.device, weights_only=True)
            classifier.head.load_state_dict(head)
            optimizer.load_state_dict(saved["optimizer"])
        return _Model(classifier, bundle, checkpoints.load_feature_extractor(source), optimizer,
                      DeviceFeeder(self.device, normalize=bundle.do_normalize))

    # ------------------------------------------------------------------ one step, one validation

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _train_step(self, fit: _Fit, micro_batches: Iterator[tuple[torch.Tensor, ...]], *,
                    clips_in_step: int) -> None:
        """One optimizer step over its micro-batches; the loss stays on the device until settled."""
        model, state = fit.model, fit.state
        step_loss = accumulate_gradients(model.classifier, micro_batches, clips_in_step=clips_in_step,
                                         autocast=self._autocast)
        model.optimizer.step()
        model.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.unsettled.append((state.step, step_loss, model.optimizer.param_groups[0]["lr"]))

    @torch.no_grad()
    def _validate(self, fit: _Fit) -> dict[str, float]:
        """Loss, macro-F1 and accuracy on the validation clips (eval mode, one host sync)."""
        classifier, n = fit.model.classifier, len(fit.plan.validation)
        was_training = classifier.training
        classifier.eval()
        batches = length_groups(fit.plan.val_lengths, fit.model.bundle, self.config.batch_size)
        loss_sums, truth, predicted = [], [], []
        for values, mask, targets in batches_on_device(fit.model.feeder, loader(
                fit.val_set, batches, num_workers=self.config.num_loader_workers, seed=0,
                normalize=fit.model.feeder.host_normalizes)):
            with self._autocast():
                logits = classifier(values, mask).float()
            loss_sums.append(F.cross_entropy(logits, targets, reduction="sum"))
            truth.append(targets)
            predicted.append(logits.argmax(-1))
        classifier.train(was_training)
        # Everything stayed on the device; one copy brings it back (indices are exact in float64).
        host = torch.cat([torch.stack(loss_sums).double(), torch.cat(truth).double(),
                          torch.cat(predicted).double()]).cpu().tolist()
        losses, labels = host[: len(loss_sums)], [int(v) for v in host[len(loss_sums):]]
        scores = core.classification_scores(labels[:n], labels[n:], len(fit.plan.labels))
        return {"val_loss": sum(losses) / n, "val_f1_macro": scores["f1_macro"], "val_accuracy": scores["accuracy"]}

    def _evaluate(self, fit: _Fit) -> dict[str, float]:
        """Settle the step losses, validate, record the scores and log them in the background."""
        rows = fit.state.settle()
        scores = self._validate(fit)
        rows += [fit.state.record(name, value) for name, value in scores.items()]
        fit.run.log_metrics(rows)
        return scores

    # ------------------------------------------------------------------ checkpoints and the result

    def _checkpoint(self, fit: _Fit, scores: dict[str, float]) -> None:
        """Save a checkpoint with everything needed to resume, then upload it in the background."""
        state = fit.state
        folder = fit.output_dir / checkpoint_dirname(state.step)
        state.checkpoints.append({
            "step": state.step, "local_path": str(folder), "epoch": state.epoch,
            "train_loss": state.mean_train_loss_since_last_checkpoint(),
            "val_loss": scores["val_loss"], "val_f1_macro": scores["val_f1_macro"],
        })
        trainer_state = {**state.to_dict(), "identity": fit.identity, "bundle": asdict(fit.model.bundle),
                         "config": self.config.to_dict(), "optimizer": fit.model.optimizer.state_dict(),
                         "rng": checkpoints.rng_state()}
        checkpoints.write_checkpoint(fit.model.classifier, fit.model.extractor, trainer_state, folder)
        fit.run.log_checkpoint(folder, state.step, state.metrics)

    @staticmethod
    def _result(fit: _Fit) -> TrainResult:
        state, run = fit.state, fit.run
        return TrainResult(
            run_id=run.run_id,
            checkpoints=tuple(CheckpointInfo(uri=run.checkpoint_uri(c["local_path"]), **c)
                              for c in state.checkpoints),
            metrics=tuple(state.metrics), stopped_early=state.early.stopped, steps=state.step,
            epochs=state.epoch, seconds=state.seconds,
        )
