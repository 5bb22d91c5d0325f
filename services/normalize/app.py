"""The ``Normalize`` Ray Serve deployment: a thin wrapper over ``NormalizeService``."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application

from serlens.normalize.config import NormalizeArgs
from serlens.normalize.service import NormalizeService
from serlens.shared.schema import LoudnessRecord


@serve.deployment(name="Normalize", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=8)
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

    def check_health(self) -> None:
        """Healthy once the service is built (it holds no external resource)."""
        if self.service is None:
            raise RuntimeError("Normalize: service not built")


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The ``Normalize`` deployment bound to its settings (a ``NormalizeArgs`` mapping)."""
    return NormalizeDeployment.bind(dict(args or {}))
