"""The ``Normalize`` Ray Serve deployment: a thin wrapper over ``NormalizeService``."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application

from serlens.normalize.config import NormalizeArgs
from serlens.normalize.service import NormalizeService
from serlens.shared.schema import LoudnessRecord
from serlens.shared.serving import health_clip, merge_options

#: Serve options of the deployment; ``build_app`` overrides and a Serve config's entry win.
DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": "Normalize", "ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 8,
}


class NormalizeDeployment:
    """Loudness normalisation of decoded 16 kHz signals (decoding happens once, at the ingress).

    Args:
        args: a ``NormalizeArgs`` mapping (``{}``: the defaults).
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.config = NormalizeArgs.model_validate(args).to_config()
        self.service = NormalizeService(config=self.config)

    def process_signal(
        self, signal: np.ndarray, sampling_rate: int, name: str = "signal"
    ) -> tuple[np.ndarray, LoudnessRecord]:
        """The normalised signal and its loudness record (``NormalizeService.process_signal``)."""
        return self.service.process_signal(signal, sampling_rate, name=name)

    async def check_health(self) -> None:
        """Healthy while a short clip is normalised to a finite loudness.

        Raises:
            RuntimeError: the clip failed or came out with a non-finite loudness.
        """
        _, record = await asyncio.to_thread(self.service.process_signal, health_clip(), 16_000, name="health")
        if not math.isfinite(record.lufs_after):
            raise RuntimeError(f"Normalize: health clip came out at {record.lufs_after} LUFS")


def build_app(args: dict[str, Any] | None = None, **options: Any) -> Application:
    """The ``Normalize`` deployment bound to its settings.

    Args:
        args: a ``NormalizeArgs`` mapping.
        options: Serve deployment options over ``DEPLOYMENT_OPTIONS``.
    """
    deployment = serve.deployment(**merge_options(DEPLOYMENT_OPTIONS, options))(NormalizeDeployment)
    return deployment.bind(dict(args or {}))
