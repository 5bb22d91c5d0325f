"""Serve helpers without Ray: deployment options merged with overrides, a health-check clip.

Each ``app.py`` keeps its deployment's defaults in one ``DEPLOYMENT_OPTIONS`` dict and wraps its
plain class with ``serve.deployment(**merge_options(DEPLOYMENT_OPTIONS, overrides))`` at build
time, as Ray's LLM serving code merges ``DEFAULT_DEPLOYMENT_OPTIONS`` with user settings. A Serve
config's ``deployments`` entry still overrides what it names (replicas, autoscaling, timeouts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Options whose values are mappings merged key by key rather than replaced.
NESTED_OPTIONS = ("ray_actor_options", "autoscaling_config")


def merge_options(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``defaults`` updated with ``overrides``; nested option mappings are merged, not replaced.

    Args:
        defaults: the app's ``DEPLOYMENT_OPTIONS``.
        overrides: options from the caller (``build_app`` arguments, the API's
            ``deployment_options``); None values are ignored.

    Returns:
        A new dict; neither input is changed.
    """
    merged = {key: dict(value) if key in NESTED_OPTIONS else value for key, value in defaults.items()}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in NESTED_OPTIONS and isinstance(value, Mapping):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def health_clip(duration_s: float = 0.5, sampling_rate: int = 16_000) -> np.ndarray:
    """A short voiced-like test signal for health checks: 150 Hz and harmonics at about -20 dBFS.

    Args:
        duration_s: length in seconds.
        sampling_rate: in Hz.

    Returns:
        float32 samples, shape ``(round(duration_s * sampling_rate),)``.
    """
    t = np.arange(round(duration_s * sampling_rate)) / sampling_rate
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    envelope = np.minimum(1.0, 20 * np.minimum(t, t[-1] - t))  # 50 ms fades, no clicks
    return (0.1 * tone * envelope).astype(np.float32)
