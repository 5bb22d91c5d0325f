"""The MLflow run of one fit: opened or reopened at the start, fed in the background, closed at the end.

Opening is synchronous (a fit that cannot create its run should not start). After that every
metric, dataset and checkpoint goes through a ``RunLogger``, off the training loop's critical
path: a tracking server that goes away mid-fit leaves training running, and the run catches up
when it comes back. Each checkpoint is uploaded twice over in the background: as run artifacts
with a hash manifest (``checkpoints/step-NNNNNN``, repaired on resume) and as an MLflow 3
LoggedModel linked to its step and metrics (``serlens.shared.logged_models``); the end of the
fit registers the checkpoint with the lowest validation loss (``serlens-ser@champion``). A
resumed fit replays the run's whole history (idempotent: each metric row keeps its timestamp,
each model is found by its step before one is created), so a crash loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from serlens.shared import logged_models, tracking
from serlens.shared.errors import TrackingError
from serlens.shared.models import ModelBundle
from serlens.shared.run_logger import RunLogger
from serlens.shared.tracking import TrackingConfig
from serlens.trainer.checkpoints import TRAINER_STATE_FILENAME
from serlens.trainer.config import TrainConfig
from serlens.trainer.state import TrainState

log = logging.getLogger(__name__)

#: How long a failing fit waits for its logger before marking the run, in seconds.
FAILURE_FLUSH_S = 10.0
_MAX_ERROR_CHARS = 5000


def _artifact_path(folder: Path) -> str:
    return f"checkpoints/{folder.name}"


class TrainRun:
    """One fit's MLflow run and its background logger.

    Args:
        tracking_config: where the run lives, and where its best checkpoint is registered.
        config: the fit's settings (whether checkpoints are uploaded).
        run_id: the run.
        identity: what the fit is (its ``train_key`` and ``labels``).
        datasets: the training and validation manifests as MLflow datasets, by context.
    """

    def __init__(self, tracking_config: TrackingConfig, config: TrainConfig, run_id: str, *,
                 identity: dict[str, Any], datasets: dict[str, Any]) -> None:
        self.tracking, self.config, self.run_id = tracking_config, config, run_id
        self.train_key, self.labels = identity["train_key"], list(identity["labels"])
        validation = datasets["validation"]
        self.validation = (validation.name, validation.digest)
        self.logger = RunLogger(tracking_config, run_id)
        self.logger.submit("log the datasets", lambda: logged_models.log_datasets(tracking_config, run_id, datasets))

    @classmethod
    def open(cls, tracking_config: TrackingConfig, config: TrainConfig, saved: dict[str, Any] | None, *,
             bundle: ModelBundle, identity: dict[str, Any], params: dict[str, Any], datasets: dict[str, Any],
             run_name: str) -> TrainRun:
        """Reopen the saved state's run when it still exists, else start one named ``run_name`` with ``params``.

        Raises:
            TrackingError: when the tracking store cannot be reached (nothing has trained yet).
        """
        train_key = identity["train_key"]
        if saved is not None and tracking.run_exists(tracking_config, saved["run_id"]):
            run_id = saved["run_id"]
            tracking.reopen_run(tracking_config, run_id)
            changed = {f"serlens.resume.{k}": v for k, v in config.to_dict().items() if saved["config"].get(k) != v}
            tracking.set_tags(tracking_config, run_id, {"serlens.resumed_from_step": saved["step"], **changed})
            return cls(tracking_config, config, run_id, identity=identity, datasets=datasets)
        if saved is not None:
            log.warning("MLflow run %s of %s is gone; starting a new run and replaying its history",
                        saved["run_id"], train_key)
        run_id = tracking.start_run(tracking_config, run_name=run_name, tags={
            "serlens": "trainer", "serlens.train_key": train_key, "serlens.model": bundle.identity,
            "serlens.random_init": bundle.random_init,
        })
        tracking.log_params(tracking_config, run_id, {
            "train": config.to_dict(), "model": {**asdict(bundle), "requested": identity["model"]},
            "data": params, "train_key": train_key,
        })
        return cls(tracking_config, config, run_id, identity=identity, datasets=datasets)

    def log_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Log metric rows in the background."""
        self.logger.log_metrics(rows)

    def log_checkpoint(self, folder: Path, step: int, metrics: list[dict[str, Any]]) -> None:
        """Upload a checkpoint in the background (when checkpoints go to MLflow): artifacts, then its model.

        Args:
            folder: the checkpoint folder.
            step: its optimizer step.
            metrics: the metric rows recorded at ``step`` (linked to the checkpoint's LoggedModel).
        """
        if not self.config.log_checkpoints_to_mlflow:
            return
        self.logger.log_folder(folder, _artifact_path(folder), exclude={TRAINER_STATE_FILENAME})
        rows = [dict(m) for m in metrics if m["step"] == step]
        self.logger.submit(f"log the model of step {step}", lambda: logged_models.log_checkpoint_model(
            self.tracking, self.run_id, folder, step=step, train_key=self.train_key, labels=self.labels,
            metric_rows=rows, dataset=self.validation, exclude={TRAINER_STATE_FILENAME}))

    def catch_up(self, state: TrainState) -> None:
        """After a resume: replay the whole history, repair every checkpoint's artifacts and models."""
        self.log_metrics(state.metrics)
        for checkpoint in state.checkpoints:
            folder = Path(checkpoint["local_path"])
            if folder.is_dir():
                self.log_checkpoint(folder, int(checkpoint["step"]), state.metrics)

    def register_best(self, state: TrainState) -> None:
        """Register the checkpoint with the lowest validation loss, in the background (after its upload)."""
        name, alias = self.tracking.registered_model, self.tracking.model_alias
        if name is None or not self.config.log_checkpoints_to_mlflow or not state.checkpoints:
            return
        best = min(state.checkpoints, key=lambda c: (c["val_loss"], -c["step"]))

        def register() -> None:
            model = logged_models.find_checkpoint_model(self.tracking, self.run_id, best["step"])
            if model is None or model.status != logged_models.LoggedModelStatus.READY:
                raise RuntimeError(f"step {best['step']} has no finished LoggedModel to register")
            logged_models.register_model(self.tracking, run_id=self.run_id, model_id=model.model_id, name=name,
                                         alias=alias, tags={"serlens.train_key": self.train_key,
                                                            "serlens.checkpoint_step": best["step"],
                                                            "val_loss": best["val_loss"],
                                                            "val_f1_macro": best["val_f1_macro"]})

        self.logger.submit(f"register step {best['step']} as {name}@{alias}", register)

    def checkpoint_uri(self, local_path: str) -> str:
        """Where a checkpoint lives: its ``runs:/`` URI when uploaded, else its file URI."""
        folder = Path(local_path)
        if self.config.log_checkpoints_to_mlflow:
            return tracking.artifact_uri(self.run_id, _artifact_path(folder))
        return folder.as_uri()

    def finish(self, state: TrainState) -> None:
        """Wait for the logger to catch up, then mark the run FINISHED.

        Raises:
            TrackingError: when MLflow did not come back within ``catchup_timeout_s``; the
                checkpoints and the resume state are saved, so a rerun only catches up.
        """
        self.logger.set_tags({"serlens.steps": state.step, "serlens.stopped_early": state.early.stopped})
        self.register_best(state)
        try:
            self.logger.close(self.tracking.catchup_timeout_s)
        except TrackingError as err:
            raise TrackingError(f"fine-tuning finished (step {state.step}, checkpoints saved) but its MLflow "
                                f"run is incomplete; rerun to log the rest. {err}") from err
        tracking.end_run(self.tracking, self.run_id, "FINISHED")

    def fail(self, error: BaseException) -> None:
        """Mark the run FAILED (KILLED for an interrupt) with the original error as a tag.

        Never raises: MLflow trouble here is logged, so the caller re-raises the original error.
        """
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        message = f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS]
        try:
            self.logger.set_tags({"serlens.error": message})
            self.logger.close(FAILURE_FLUSH_S)
        except TrackingError as err:
            log.warning("run %s: not everything reached MLflow before marking it %s: %s", self.run_id, status, err)
        try:
            tracking.end_run(self.tracking, self.run_id, status)
        except TrackingError as err:
            log.warning("cannot mark MLflow run %s %s (the fit failed with %s): %s",
                        self.run_id, status, message, err)
