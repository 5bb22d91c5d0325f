"""``PredictService``: one fine-tuned checkpoint, loaded once, turning clips into probabilities.

A plain class: under Ray Serve the ``Predict`` deployment builds one per checkpoint;
nothing here imports Ray.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from serlens.embed.core import max_input_samples, min_input_samples
from serlens.predict import core
from serlens.predict.config import PredictConfig
from serlens.shared.models import (
    SpeechClassifier,
    check_encoder_input,
    length_groups,
    prepare_batch,
    resolve_device,
)


class PredictService:
    """Class probabilities (softmax over the head's logits) of a ``SpeechClassifier`` checkpoint.

    Args:
        config: the validated settings.
        checkpoint: a folder written by ``SpeechClassifier.save`` (encoder, head, labels).

    Attributes:
        labels: class names, in the order of every probability vector returned.
        bundle: the encoder's identity.
        device: where the model runs.

    Raises:
        ModelLoadError: the folder is not a fine-tuned checkpoint.
        InvalidConfigError: ``cuda`` requested without one.
    """

    def __init__(self, *, config: PredictConfig, checkpoint: str | os.PathLike[str]) -> None:
        self.config = config
        self.checkpoint = str(checkpoint)
        self.device = resolve_device(config.device)
        self.model = SpeechClassifier.load(self.checkpoint, device=self.device)
        self.labels: tuple[str, ...] = tuple(self.model.labels)
        self.bundle = self.model.bundle
        self.min_samples = min_input_samples(self.model.encoder)
        self.max_samples = max_input_samples(self.model.encoder)

    def _check(self, signal: np.ndarray, sampling_rate: int, name: str) -> np.ndarray:
        return check_encoder_input(signal, sampling_rate, self.bundle, min_samples=self.min_samples,
                                   max_samples=self.max_samples, name=name)

    def process_signal(
        self, signal: np.ndarray, sampling_rate: int, *, name: str = "signal"
    ) -> dict[str, float]:
        """Class probabilities of one clip.

        Args:
            signal: mono float samples, shape ``(num_samples,)``.
            sampling_rate: in Hz; must be ``bundle.sampling_rate``.
            name: how to name the clip in errors.

        Returns:
            ``{label: probability}`` in ``labels`` order; the values sum to 1.

        Raises:
            InvalidAudioError: another rate, not 1-D, empty, NaN/inf, or too short for one frame.
        """
        x = self._check(signal, sampling_rate, name)
        return core.probabilities_by_label(self._probabilities([x])[0], self.labels)

    def process_batch(
        self, signals: Sequence[np.ndarray], sampling_rate: int = 16_000
    ) -> np.ndarray:
        """Class probabilities of each clip; every clip is checked before any is run.

        A clip's probabilities do not depend on what it is batched with (padding is masked).

        Args:
            signals: mono float signals of any lengths.
            sampling_rate: in Hz; must be ``bundle.sampling_rate``.

        Returns:
            float64 array of shape ``(len(signals), len(labels))``, in input order.

        Raises:
            InvalidAudioError: for the first bad clip, named ``signals[i]``.
        """
        checked = [self._check(s, sampling_rate, f"signals[{i}]") for i, s in enumerate(signals)]
        return self._probabilities(checked)

    def _probabilities(self, signals: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(signals), len(self.labels)), dtype=np.float64)
        groups = length_groups([len(s) for s in signals], self.bundle, self.config.batch_size)
        with torch.inference_mode():
            for group in groups:
                values, mask = prepare_batch(
                    [signals[i] for i in group], self.bundle, device=self.device
                )
                logits = self.model(values, mask).float().cpu().numpy()
                out[group] = core.softmax(logits)
        return out
