"""The ``Predict`` Ray Serve deployment: ``PredictService`` checkpoints in a ``ModelCache``."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application

from serlens.embed.service import ModelCache
from serlens.predict.config import PredictArgs
from serlens.predict.service import PredictService
from serlens.shared.serving import health_clip, merge_options

#: Serve options of the deployment; ``build_app`` overrides and a Serve config's entry win.
DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": "Predict", "ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 16,
}


class PredictDeployment:
    """Emotion probabilities from fine-tuned checkpoints (a few kept loaded).

    Args:
        args: a ``PredictArgs`` mapping (``{}``: the defaults).
        preload: a checkpoint folder to load at start, or None.
        cache_size: checkpoints kept loaded at once (least recently used is dropped).
    """

    def __init__(self, args: dict[str, Any], *, preload: str | None = None, cache_size: int = 2) -> None:
        config = PredictArgs.model_validate(args).to_config()
        self.models = ModelCache(lambda folder: PredictService(config=config, checkpoint=folder), size=cache_size)
        self.models.preload(preload)

    def _predict(self, signal: np.ndarray, sampling_rate: int, checkpoint: str, name: str) -> dict[str, float]:
        return self.models.get(checkpoint).process_signal(signal, sampling_rate, name=name)

    async def process_signal(
        self, signal: np.ndarray, sampling_rate: int, checkpoint: str, name: str = "signal"
    ) -> dict[str, float]:
        """``{label: probability}`` of one clip from the checkpoint folder ``checkpoint``.

        Raises:
            ModelLoadError: the folder is not a fine-tuned checkpoint.
            InvalidAudioError: a clip the encoder cannot take.
        """
        return await asyncio.to_thread(self._predict, signal, sampling_rate, checkpoint, name)

    async def check_health(self) -> None:
        """Healthy while the most recently used checkpoint gives probabilities summing to 1.

        Raises:
            RuntimeError: the forward pass failed or gave something that is not a distribution.
        """
        await asyncio.to_thread(self.models.check_most_recent, _check_probabilities)


def _check_probabilities(name: str, service: PredictService) -> None:
    total = sum(service.process_signal(health_clip(), 16_000, name="health").values())
    if not math.isclose(total, 1.0, abs_tol=1e-4):
        raise RuntimeError(f"Predict: checkpoint {name} gives probabilities summing to {total}")


def build_app(
    args: dict[str, Any] | None = None, *, preload: str | None = None, num_gpus: float = 0, **options: Any
) -> Application:
    """The ``Predict`` deployment bound to its settings.

    Args:
        args: a ``PredictArgs`` mapping.
        preload: a checkpoint folder to load at start.
        num_gpus: GPU share of each replica (0 on a CPU-only cluster).
        options: Serve deployment options over ``DEPLOYMENT_OPTIONS``.
    """
    defaults = merge_options(DEPLOYMENT_OPTIONS, {"ray_actor_options": {"num_gpus": num_gpus}})
    deployment = serve.deployment(**merge_options(defaults, options))(PredictDeployment)
    return deployment.bind(dict(args or {}), preload=preload)
