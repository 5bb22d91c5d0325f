"""The ``Embed`` Ray Serve deployment: ``EmbedService`` models in a ``ModelCache``, batched requests.

Concurrent requests are gathered (``serve.batch``) into one ``EmbedService.process_batch`` call
per model (every hidden state is computed, then each request's layers are picked), so a
request returns the same vectors whether it was batched or not (the service masks padding).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ray import serve
from ray.serve import Application

from serlens.embed import core
from serlens.embed.config import EmbedArgs
from serlens.embed.service import EmbedService, ModelCache
from serlens.shared.errors import ModelOutOfMemoryError, ServiceError
from serlens.shared.serving import health_clip, merge_options

logger = logging.getLogger("ray.serve")

#: Serve options of the deployment; ``build_app`` overrides and a Serve config's entry win.
DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": "Embed",
    "ray_actor_options": {"num_cpus": 0.1},
    "max_ongoing_requests": 16,
}


def _out_of_memory(err: BaseException) -> bool:
    """A CUDA or CPU allocation failure (torch reports the CPU one as a RuntimeError)."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def embed_batch_or_each(
    service: EmbedService, signals: list[np.ndarray], sampling_rate: int
) -> list[np.ndarray | ServiceError]:
    """Every hidden state of each clip: one batch, or clip by clip when the batch fails.

    A bad clip or an out-of-memory error (CUDA or CPU) fails only its own request: the batch
    is retried one clip at a time, and a clip that still runs out of memory alone gets a
    ``ModelOutOfMemoryError`` (503) while the others get their vectors.
    """
    try:
        return list(service.process_batch(signals, sampling_rate, layers=None))
    except (ServiceError, torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as err:
        if not isinstance(err, ServiceError) and not _out_of_memory(err):
            raise
        logger.warning("Embed: batch of %d failed (%s); retrying clip by clip", len(signals), type(err).__name__)
    results: list[np.ndarray | ServiceError] = []
    for i, signal in enumerate(signals):
        try:
            results.append(service.process_signal(signal, sampling_rate, layers=None))
        except ServiceError as err:
            results.append(err)
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as err:
            if not _out_of_memory(err):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            results.append(ModelOutOfMemoryError(
                f"signals[{i}]: {len(signal) / sampling_rate:.1f} s ran the encoder out of memory; "
                "send a shorter clip or retry later"))
    return results


class EmbedDeployment:
    """Pooled hidden states of 16 kHz signals, for any checkpoint folder (a few kept loaded).

    Args:
        args: an ``EmbedArgs`` mapping (``{}``: the defaults).
        max_batch_size: most requests gathered into one batch.
        batch_wait_timeout_s: longest wait for a batch to fill, in seconds.
        preload: a model folder to load at start (the default checkpoint), or None.
        cache_size: models kept loaded at once (least recently used is dropped).
    """

    def __init__(
        self,
        args: dict[str, Any],
        *,
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.05,
        preload: str | None = None,
        cache_size: int = 2,
    ) -> None:
        config = EmbedArgs.model_validate(args).to_config()
        self.models = ModelCache(lambda model: EmbedService(config=config, model=model), size=cache_size)
        batch = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
        self._batched: Any = batch(self._embed_batch)  # type: ignore[arg-type]
        self.models.preload(preload)

    async def info(self, model: str) -> dict[str, Any]:
        """The identity of a model folder (loading it if needed): ``ModelBundle`` fields."""
        service = await asyncio.to_thread(self.models.get, model)
        return {
            **service.bundle.__dict__,
            "identity": service.bundle.identity,
            "num_hidden_states": service.bundle.num_hidden_states,
        }

    async def embed_signal(
        self, signal: np.ndarray, sampling_rate: int, model: str, layers: Sequence[int] | None = None
    ) -> np.ndarray:
        """Pooled hidden states of one clip, shape ``(len(layers), hidden_size)`` (float32).

        Args:
            signal: mono float samples at ``sampling_rate``.
            sampling_rate: in Hz (the model's rate, 16000).
            model: the model folder (a checkpoint) to use.
            layers: hidden-state indices (None: every one).

        Raises:
            InvalidConfigError: a layer index out of range.
            InvalidAudioError: a clip the encoder cannot take.
        """
        service = await asyncio.to_thread(self.models.get, model)
        chosen = core.select_layers(layers, service.bundle.num_hidden_states)
        result = await self._batched(signal, sampling_rate, model)
        if isinstance(result, Exception):
            raise result
        return result[list(chosen)]

    async def _embed_batch(
        self, signals: list[np.ndarray], sampling_rates: list[int], models: list[str]
    ) -> list[np.ndarray | ServiceError]:
        # A clip the encoder refuses gets its error back instead of failing the whole batch.
        return await asyncio.to_thread(self._run_batch, signals, sampling_rates, models)

    def _run_batch(
        self, signals: list[np.ndarray], sampling_rates: list[int], models: list[str]
    ) -> list[np.ndarray | ServiceError]:
        results: list[np.ndarray | ServiceError] = [np.empty(0)] * len(signals)
        groups: dict[tuple[str, int], list[int]] = {}
        for i, key in enumerate(zip(models, sampling_rates, strict=True)):
            groups.setdefault(key, []).append(i)
        for (model, rate), indices in groups.items():
            pooled = embed_batch_or_each(self.models.get(model), [signals[i] for i in indices], rate)
            for row, i in enumerate(indices):
                results[i] = pooled[row]
        return results

    async def check_health(self) -> None:
        """Healthy while the most recently used model embeds a short clip into finite vectors.

        Raises:
            RuntimeError: the forward pass failed or gave non-finite values.
        """
        await asyncio.to_thread(self.models.check_most_recent, _check_embedding)


def _check_embedding(name: str, service: EmbedService) -> None:
    vectors = service.process_signal(health_clip(), 16_000, name="health")
    if not np.isfinite(vectors).all():
        raise RuntimeError(f"Embed: model {name} gives non-finite vectors for the health clip")


def build_app(
    args: dict[str, Any] | None = None,
    *,
    max_batch_size: int = 8,
    batch_wait_timeout_s: float = 0.05,
    preload: str | None = None,
    num_gpus: float = 0,
    **options: Any,
) -> Application:
    """The ``Embed`` deployment bound to its settings.

    Args:
        args: an ``EmbedArgs`` mapping.
        max_batch_size: most requests per batch.
        batch_wait_timeout_s: longest wait for a batch to fill, in seconds.
        preload: a model folder to load at start.
        num_gpus: GPU share of each replica (0 on a CPU-only cluster).
        options: Serve deployment options over ``DEPLOYMENT_OPTIONS``.
    """
    # Twice a batch in flight lets the next batch fill while one runs.
    defaults = merge_options(DEPLOYMENT_OPTIONS, {
        "ray_actor_options": {"num_gpus": num_gpus}, "max_ongoing_requests": max(16, 2 * max_batch_size)})
    deployment = serve.deployment(**merge_options(defaults, options))(EmbedDeployment)
    return deployment.bind(
        dict(args or {}), max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s, preload=preload
    )
