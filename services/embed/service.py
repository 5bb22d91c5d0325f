"""``EmbedService``: one speech encoder, loaded once, turning clips into pooled hidden states.

Plain classes: under Ray each replica builds its own services, kept in a ``ModelCache`` (the
same cache the ``Predict`` deployment uses); nothing here imports Ray.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np
import torch

from serlens.embed import core
from serlens.embed.config import EmbedConfig
from serlens.embed.feed import Feed
from serlens.shared.errors import InvalidConfigError, ServiceError
from serlens.shared.fast_wavlm import FastWavLM
from serlens.shared.hidden_states import pooled_hidden_states
from serlens.shared.models import check_encoder_input, load_encoder, prepare_batch, resolve_device

T = TypeVar("T")

logger = logging.getLogger(__name__)


class ModelCache(Generic[T]):
    """Loaded models by folder, at most ``size`` at once (the least recently used is dropped).

    Thread-safe: concurrent requests for a model not yet loaded load it once.

    Args:
        load: builds the model (a service) from its folder or hub id.
        size: models kept loaded at once.

    Raises:
        InvalidConfigError: ``size`` under 1.
    """

    def __init__(self, load: Callable[[str], T], *, size: int = 2) -> None:
        if size < 1:
            raise InvalidConfigError(f"model cache size {size}; expected at least 1")
        self._load = load
        self.size = size
        self._models: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> T:
        """The model loaded from ``name`` (loaded now if it is not cached)."""
        with self._lock:
            if name not in self._models:
                self._models[name] = self._load(name)
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
            self._models.move_to_end(name)
            return self._models[name]

    def preload(self, name: str | None) -> None:
        """Load ``name`` now if given; a failure is logged, and reported to its first request."""
        if name:
            try:
                self.get(name)
            except ServiceError as err:
                logger.warning("could not preload %s: %s", name, err)

    def check_most_recent(self, check: Callable[[str, T], None]) -> None:
        """Run ``check(name, model)`` on the most recently used model (nothing when none is loaded)."""
        recent = self.most_recent()
        if recent is not None:
            check(*recent)

    def most_recent(self) -> tuple[str, T] | None:
        """The most recently used model and its name, or None when none is loaded."""
        with self._lock:
            return next(reversed(self._models.items()), None)

    def names(self) -> list[str]:
        """Names of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)


class EmbedService:
    """Mean over valid frames of each hidden state of a speech encoder.

    Args:
        config: the validated settings.
        model: hub id or local folder of the encoder (a checkpoint written by the trainer, too).
        revision: hub revision.

    Attributes:
        bundle: the encoder's identity (sampling rate, layer count, hidden size...).
        device: where the model runs, as resolved from ``config.device``.
        layers: the hidden states kept by default (``config.layers``, validated).

    Raises:
        ModelLoadError: the model cannot be loaded as a speech encoder.
        InvalidConfigError: ``cuda`` requested without one, or ``config.layers`` out of range.
    """

    def __init__(self, *, config: EmbedConfig, model: str, revision: str | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and config.precision == "fp32":
            # fp32 means fp32: cuDNN's TF32 convolutions make a clip's vector depend on the
            # batch it is padded into by ~1e-3 (measured on an H200 with WavLM-large's shapes).
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model, self.bundle = load_encoder(model, revision=revision, device=self.device)
        self.layers = core.select_layers(config.layers, self.bundle.num_hidden_states)
        self.min_samples = core.min_input_samples(self.model)
        self.max_samples = core.max_input_samples(self.model)
        # The fast path (config.fast): wraps the same model, nothing is copied. Whisper's log-mel
        # input is computed by its wrapper, so it takes the Hugging Face path.
        self.fast: FastWavLM | None = None
        self.feed: Feed | None = None
        if config.fast and self.bundle.model_type != "whisper":
            self.fast = FastWavLM(self.model, compile_layers=config.compile_layers)
            self.feed = Feed(device=self.device, do_normalize=self.bundle.do_normalize)

    def _check(self, signal: np.ndarray, sampling_rate: int, name: str) -> np.ndarray:
        return check_encoder_input(signal, sampling_rate, self.bundle, min_samples=self.min_samples,
                                   max_samples=self.max_samples, name=name)

    def process_signal(
        self,
        signal: np.ndarray,
        sampling_rate: int,
        *,
        layers: Sequence[int] | None = None,
        name: str = "signal",
    ) -> np.ndarray:
        """Pooled hidden states of one clip.

        Args:
            signal: mono float samples, shape ``(num_samples,)``.
            sampling_rate: in Hz; must be ``bundle.sampling_rate``.
            layers: hidden-state indices to keep (default: ``self.layers``).
            name: how to name the clip in errors.

        Returns:
            float32 array of shape ``(len(layers), hidden_size)``.

        Raises:
            InvalidAudioError: another rate, not 1-D, empty, NaN/inf, or too short for one frame.
            InvalidConfigError: a layer index out of range.
        """
        chosen = (
            self.layers
            if layers is None
            else core.select_layers(layers, self.bundle.num_hidden_states)
        )
        x = self._check(signal, sampling_rate, name)
        return self._embed([x], chosen)[0]

    def process_batch(
        self,
        signals: Sequence[np.ndarray],
        sampling_rate: int = 16_000,
        *,
        layers: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Pooled hidden states of each clip; every clip is checked before any is embedded.

        Clips are batched by length (``config.batch_size``, ``config.max_batch_audio_s``);
        each clip's result does not depend on what it is batched with.

        Args:
            signals: mono float signals of any lengths.
            sampling_rate: in Hz; must be ``bundle.sampling_rate``.
            layers: hidden-state indices to keep (default: ``self.layers``).

        Returns:
            float32 array of shape ``(len(signals), len(layers), hidden_size)``, in input order.

        Raises:
            InvalidAudioError: for the first bad clip, named ``signals[i]``.
            InvalidConfigError: a layer index out of range.
        """
        chosen = (
            self.layers
            if layers is None
            else core.select_layers(layers, self.bundle.num_hidden_states)
        )
        checked = [self._check(s, sampling_rate, f"signals[{i}]") for i, s in enumerate(signals)]
        return self._embed(checked, chosen)

    def _plan(self, signals: list[np.ndarray]) -> list[list[int]]:
        budget = int(self.config.max_batch_audio_s * self.bundle.sampling_rate)
        return core.plan_batches(
            [len(s) for s in signals],
            self.bundle,
            frames=[core.frames_computed(self.model, len(s)) for s in signals],
            max_batch_frames=max(core.frames_computed(self.model, budget), 1),
            batch_size=self.config.batch_size,
        )

    def _embed(self, signals: list[np.ndarray], layers: tuple[int, ...]) -> np.ndarray:
        out = np.empty((len(signals), len(layers), self.bundle.hidden_size), dtype=np.float32)
        plan = self._plan(signals)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if core.uses_autocast(self.config.precision, self.device.type)
            else contextlib.nullcontext()
        )
        # Results stay on the device until every batch is queued: no host sync per batch.
        with torch.inference_mode(), autocast:
            if self.fast is not None and self.feed is not None:
                # Closed on any exit: the feed's buffers are free again even if a forward raises.
                with contextlib.closing(self.feed.batches(signals, plan)) as batches:
                    pooled_batches = [
                        core.pooled_states(self.fast, batch.values, batch.lengths, layers=layers,
                                           mask_padding=batch.padded and self.bundle.supports_padding_mask)
                        for batch in batches
                    ]
            else:
                pooled_batches = [self._pooled_hf([signals[i] for i in batch], layers) for batch in plan]
        for batch, pooled in zip(plan, pooled_batches, strict=True):
            out[batch] = pooled.float().cpu().numpy()
        return out

    def _pooled_hf(self, chosen: list[np.ndarray], layers: tuple[int, ...]) -> torch.Tensor:
        """The previous path (``config.fast`` off): host-built masks, Hugging Face's forward."""
        values, mask = prepare_batch(chosen, self.bundle, device=self.device)
        padded = len({len(s) for s in chosen}) > 1
        return pooled_hidden_states(self.model, values, mask, self.bundle, layers=layers, padded=padded)
