"""The MLflow run of one fit: opened or reopened at the start, fed in the background, closed at the end.

Opening is synchronous (a fit that cannot create its run should not start). After that every
metric and checkpoint goes through a ``RunLogger``, off the training loop's critical path:
a tracking server that goes away mid-fit leaves training running, and the run catches up when
it comes back. A resumed fit replays the run's whole history (idempotent: each metric row
keeps its timestamp) and repairs every checkpoint's artifacts against its hash manifest, so a
crash between a checkpoint and its upload loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from serlens.shared import tracking
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
        tracking_config: where the run lives.
        config: the fit's settings (whether checkpoints are uploaded).
        run_id: the run.
    """

    def __init__(self, tracking_config: TrackingConfig, config: TrainConfig, run_id: str) -> None:
        self.tracking, self.config, self.run_id = tracking_config, config, run_id
        self.logger = RunLogger(tracking_config, run_id)

    @classmethod
    def open(cls, tracking_config: TrackingConfig, config: TrainConfig, saved: dict[str, Any] | None, *,
             bundle: ModelBundle, identity: dict[str, Any], params: dict[str, Any]) -> TrainRun:
        """Reopen the saved state's run when it still exists, else start one with ``params``.

        Raises:
            TrackingError: when the tracking store cannot be reached (nothing has trained yet).
        """
        train_key = identity["train_key"]
        if saved is not None and tracking.run_exists(tracking_config, saved["run_id"]):
            run_id = saved["run_id"]
            tracking.reopen_run(tracking_config, run_id)
            changed = {f"serlens.resume.{k}": v for k, v in config.to_dict().items() if saved["config"].get(k) != v}
            tracking.set_tags(tracking_config, run_id, {"serlens.resumed_from_step": saved["step"], **changed})
            return cls(tracking_config, config, run_id)
        if saved is not None:
            log.warning("MLflow run %s of %s is gone; starting a new run and replaying its history",
                        saved["run_id"], train_key)
        run_id = tracking.start_run(tracking_config, run_name=train_key, tags={
            "serlens": "trainer", "serlens.train_key": train_key, "serlens.model": bundle.identity,
            "serlens.random_init": bundle.random_init,
        })
        tracking.log_params(tracking_config, run_id, {
            "train": config.to_dict(), "model": {**asdict(bundle), "requested": identity["model"]},
            "data": params, "train_key": train_key,
        })
        return cls(tracking_config, config, run_id)

    def log_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Log metric rows in the background."""
        self.logger.log_metrics(rows)

    def log_checkpoint(self, folder: Path) -> None:
        """Upload a checkpoint folder in the background (when checkpoints go to MLflow)."""
        if self.config.log_checkpoints_to_mlflow:
            self.logger.log_folder(folder, _artifact_path(folder), exclude={TRAINER_STATE_FILENAME})

    def catch_up(self, state: TrainState) -> None:
        """After a resume: replay the whole history and repair every checkpoint's artifacts."""
        self.log_metrics(state.metrics)
        for checkpoint in state.checkpoints:
            folder = Path(checkpoint["local_path"])
            if folder.is_dir():
                self.log_checkpoint(folder)

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
