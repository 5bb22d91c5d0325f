"""The ``Egemaps`` Ray Serve deployment: a thin wrapper over ``EgemapsService``."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application

from serlens.egemaps.config import EgemapsArgs
from serlens.egemaps.service import EgemapsService


# An extractor is one thread. Half a logical CPU per replica lets build_app run one replica per
# core beside the light deployments (ingress, normalize), which is what keeps /egemaps close to
# calling openSMILE directly.
@serve.deployment(name="Egemaps", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class EgemapsDeployment:
    """eGeMAPSv02 functionals of normalised 16 kHz signals; one openSMILE extractor per replica.

    Args:
        args: an ``EgemapsArgs`` mapping (``{}``: the defaults).
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.service = EgemapsService(config=EgemapsArgs.model_validate(args).to_config())

    def process_signal(
        self, signal: np.ndarray, sampling_rate: int, name: str = "signal"
    ) -> dict[str, float]:
        """The 88 functionals of one clip (see ``EgemapsService.process_signal``)."""
        return self.service.process_signal(signal, sampling_rate, name=name)

    def info(self) -> dict[str, Any]:
        """Lineage of the extractor: ``extractor_version`` and the 88 ``feature_names``."""
        return {
            "extractor_version": self.service.extractor_version,
            "feature_names": list(self.service.feature_names),
        }

    def check_health(self) -> None:
        """Healthy while the extractor reports its 88 features."""
        if len(self.service.feature_names) != 88:
            raise RuntimeError(
                f"Egemaps: extractor reports {len(self.service.feature_names)} features, not 88"
            )


def build_app(args: dict[str, Any] | None = None, *, num_replicas: int = 1) -> Application:
    """The ``Egemaps`` deployment bound to its settings (an ``EgemapsArgs`` mapping).

    Args:
        args: an ``EgemapsArgs`` mapping.
        num_replicas: extractor replicas (a Serve config's autoscaling settings replace it).
    """
    return EgemapsDeployment.options(num_replicas=num_replicas).bind(dict(args or {}))
