"""The ``Predict`` Ray Serve deployment: a thin wrapper over ``PredictService``."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application

from serlens.predict.config import PredictArgs
from serlens.predict.service import PredictService
from serlens.shared.errors import ServiceError

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Predict", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
class PredictDeployment:
    """Emotion probabilities from fine-tuned checkpoints (a few kept loaded).

    Args:
        args: a ``PredictArgs`` mapping (``{}``: the defaults).
        preload: a checkpoint folder to load at start, or None.
        cache_size: checkpoints kept loaded at once (least recently used is dropped).
    """

    def __init__(
        self, args: dict[str, Any], *, preload: str | None = None, cache_size: int = 2
    ) -> None:
        self.config = PredictArgs.model_validate(args).to_config()
        self.cache_size = max(1, cache_size)
        self._models: OrderedDict[str, PredictService] = OrderedDict()
        self._lock = threading.Lock()
        if preload:
            try:
                self._service(preload)
            except ServiceError as err:
                # Best effort: the first request for that checkpoint reports the problem.
                logger.warning("Predict: could not preload %s: %s", preload, err)

    def _service(self, checkpoint: str) -> PredictService:
        with self._lock:
            if checkpoint not in self._models:
                self._models[checkpoint] = PredictService(config=self.config, checkpoint=checkpoint)
                while len(self._models) > self.cache_size:
                    self._models.popitem(last=False)
            self._models.move_to_end(checkpoint)
            return self._models[checkpoint]

    def _predict(
        self, signal: np.ndarray, sampling_rate: int, checkpoint: str, name: str
    ) -> dict[str, float]:
        return self._service(checkpoint).process_signal(signal, sampling_rate, name=name)

    async def process_signal(
        self, signal: np.ndarray, sampling_rate: int, checkpoint: str, name: str = "signal"
    ) -> dict[str, float]:
        """``{label: probability}`` of one clip from the checkpoint folder ``checkpoint``.

        Raises:
            ModelLoadError: the folder is not a fine-tuned checkpoint.
            InvalidAudioError: a clip the encoder cannot take.
        """
        return await asyncio.to_thread(self._predict, signal, sampling_rate, checkpoint, name)

    def check_health(self) -> None:
        """Healthy while every loaded checkpoint still has its weights."""
        with self._lock:
            for name, service in self._models.items():
                if service.model is None:
                    raise RuntimeError(f"Predict: checkpoint {name} lost its weights")


def build_app(
    args: dict[str, Any] | None = None, *, preload: str | None = None, num_gpus: float = 0
) -> Application:
    """The ``Predict`` deployment bound to its settings.

    Args:
        args: a ``PredictArgs`` mapping.
        preload: a checkpoint folder to load at start.
        num_gpus: GPU share of each replica (0 on a CPU-only cluster).
    """
    deployment = PredictDeployment.options(
        ray_actor_options={"num_cpus": 0.1, "num_gpus": num_gpus}
    )
    return deployment.bind(dict(args or {}), preload=preload)
