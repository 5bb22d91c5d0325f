"""The ``Egemaps`` Ray Serve deployment: a thin wrapper over ``EgemapsService``."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application

from serlens.egemaps.config import EgemapsArgs
from serlens.egemaps.service import EgemapsService
from serlens.shared.serving import health_clip, merge_options

#: Serve options of the deployment; ``build_app`` overrides and a Serve config's entry win.
#: An extractor is one thread. Half a logical CPU per replica lets the API run one replica per
#: core beside the light deployments (ingress, normalize), which is what keeps /egemaps close to
#: calling openSMILE directly.
DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": "Egemaps", "ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 8,
}


class EgemapsDeployment:
    """eGeMAPSv02 functionals of normalised 16 kHz signals; one openSMILE extractor per replica.

    Args:
        args: an ``EgemapsArgs`` mapping (``{}``: the defaults).
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.service = EgemapsService(config=EgemapsArgs.model_validate(args).to_config())

    def process_signal(self, signal: np.ndarray, sampling_rate: int, name: str = "signal") -> dict[str, float]:
        """The 88 functionals of one clip (see ``EgemapsService.process_signal``)."""
        return self.service.process_signal(signal, sampling_rate, name=name)

    def info(self) -> dict[str, Any]:
        """Lineage of the extractor: ``extractor_version`` and the 88 ``feature_names``."""
        return {
            "extractor_version": self.service.extractor_version,
            "feature_names": list(self.service.feature_names),
        }

    async def check_health(self) -> None:
        """Healthy while the extractor turns a short clip into 88 finite functionals.

        Raises:
            RuntimeError: the extractor failed, or returned another count or non-finite values.
        """
        features = await asyncio.to_thread(self.service.process_signal, health_clip(), 16_000, name="health")
        bad = [k for k, v in features.items() if not math.isfinite(v)]
        if len(features) != 88 or bad:
            raise RuntimeError(f"Egemaps: {len(features)} functionals, non-finite: {bad[:5]}")


def build_app(args: dict[str, Any] | None = None, **options: Any) -> Application:
    """The ``Egemaps`` deployment bound to its settings.

    Args:
        args: an ``EgemapsArgs`` mapping.
        options: Serve deployment options over ``DEPLOYMENT_OPTIONS`` (e.g. ``num_replicas``).
    """
    deployment = serve.deployment(**merge_options(DEPLOYMENT_OPTIONS, options))(EgemapsDeployment)
    return deployment.bind(dict(args or {}))
