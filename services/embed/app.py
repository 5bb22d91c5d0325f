"""The ``Embed`` Ray Serve deployment: ``EmbedService`` behind ``@serve.batch``.

Concurrent requests are gathered into one ``EmbedService.process_batch`` call per model
(every hidden state is computed, then each request's layers are picked), so a request
returns the same vectors whether it was batched or not (the service masks padding).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ray import serve
from ray.serve import Application

from serlens.embed import core
from serlens.embed.config import EmbedArgs
from serlens.embed.service import EmbedService
from serlens.shared.errors import ModelOutOfMemoryError, ServiceError

logger = logging.getLogger("ray.serve")


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


@serve.deployment(name="Embed", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
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
        self.config = EmbedArgs.model_validate(args).to_config()
        self.cache_size = max(1, cache_size)
        self._models: OrderedDict[str, EmbedService] = OrderedDict()
        self._lock = threading.Lock()
        self.embed_batch.set_max_batch_size(max_batch_size)
        self.embed_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        if preload:
            try:
                self._service(preload)
            except ServiceError as err:
                # Best effort: the first request for that model reports the problem.
                logger.warning("Embed: could not preload %s: %s", preload, err)

    def _service(self, model: str) -> EmbedService:
        # One lock: two requests for a model not yet loaded load it once.
        with self._lock:
            if model not in self._models:
                self._models[model] = EmbedService(config=self.config, model=model)
                while len(self._models) > self.cache_size:
                    self._models.popitem(last=False)
            self._models.move_to_end(model)
            return self._models[model]

    async def info(self, model: str) -> dict[str, Any]:
        """The identity of a model folder (loading it if needed): ``ModelBundle`` fields."""
        service = await asyncio.to_thread(self._service, model)
        return {
            **service.bundle.__dict__,
            "identity": service.bundle.identity,
            "num_hidden_states": service.bundle.num_hidden_states,
        }

    async def embed_signal(
        self,
        signal: np.ndarray,
        sampling_rate: int,
        model: str,
        layers: Sequence[int] | None = None,
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
        service = await asyncio.to_thread(self._service, model)
        chosen = core.select_layers(layers, service.bundle.num_hidden_states)
        result = await self.embed_batch(signal, sampling_rate, model)
        if isinstance(result, Exception):
            raise result
        return result[list(chosen)]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def embed_batch(
        self, signals: list[np.ndarray], sampling_rates: list[int], models: list[str]
    ) -> list[np.ndarray | ServiceError]:
        """Every hidden state of each queued clip; one ``process_batch`` call per model.

        A clip the encoder refuses gets its error back instead of failing the whole batch.
        """
        return await asyncio.to_thread(self._run_batch, signals, sampling_rates, models)

    def _run_batch(
        self, signals: list[np.ndarray], sampling_rates: list[int], models: list[str]
    ) -> list[np.ndarray | ServiceError]:
        results: list[np.ndarray | ServiceError] = [np.empty(0)] * len(signals)
        groups: dict[tuple[str, int], list[int]] = {}
        for i, key in enumerate(zip(models, sampling_rates, strict=True)):
            groups.setdefault(key, []).append(i)
        for (model, rate), indices in groups.items():
            pooled = embed_batch_or_each(self._service(model), [signals[i] for i in indices], rate)
            for row, i in enumerate(indices):
                results[i] = pooled[row]
        return results

    def check_health(self) -> None:
        """Healthy while every loaded model still has its weights."""
        with self._lock:
            for name, service in self._models.items():
                if service.model is None:
                    raise RuntimeError(f"Embed: model {name} lost its weights")


def build_app(
    args: dict[str, Any] | None = None,
    *,
    max_batch_size: int = 8,
    batch_wait_timeout_s: float = 0.05,
    preload: str | None = None,
    num_gpus: float = 0,
) -> Application:
    """The ``Embed`` deployment bound to its settings.

    Args:
        args: an ``EmbedArgs`` mapping.
        max_batch_size: most requests per batch.
        batch_wait_timeout_s: longest wait for a batch to fill, in seconds.
        preload: a model folder to load at start.
        num_gpus: GPU share of each replica (0 on a CPU-only cluster).
    """
    deployment = EmbedDeployment.options(
        ray_actor_options={"num_cpus": 0.1, "num_gpus": num_gpus},
        max_ongoing_requests=max(16, 2 * max_batch_size),
    )
    return deployment.bind(
        dict(args or {}),
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        preload=preload,
    )
