"""``EgemapsService``: one openSMILE extractor, created once, applied to 16 kHz signals.

A plain class: under Ray each worker process builds its own service (and so its own
``opensmile.Smile``) in its constructor; nothing here imports Ray.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import opensmile

from serlens.egemaps import core
from serlens.egemaps.config import EgemapsConfig
from serlens.shared.audio import TARGET_SAMPLING_RATE, check_input_signal, decode
from serlens.shared.errors import InvalidConfigError
from serlens.shared.schema import egemaps_feature_names


class EgemapsService:
    """eGeMAPSv02 functionals (88 per clip, openSMILE's names verbatim).

    Args:
        config: the validated settings.

    Attributes:
        feature_names: the 88 functional names, in the order of every vector returned.
        extractor_version: lineage string, e.g. ``opensmile-2.6.0/eGeMAPSv02/Functionals``.

    Raises:
        InvalidConfigError: an unknown feature set.
        ServiceError: the extractor does not report the 88 canonical names.
    """

    def __init__(self, *, config: EgemapsConfig) -> None:
        try:
            feature_set = opensmile.FeatureSet[config.feature_set]
        except KeyError as err:
            raise InvalidConfigError(
                f"egemaps.feature_set: {config.feature_set!r} is not an openSMILE feature set; "
                "expected 'eGeMAPSv02'"
            ) from err
        self.config = config
        self._smile = opensmile.Smile(
            feature_set=feature_set, feature_level=opensmile.FeatureLevel.Functionals
        )
        self.feature_names: tuple[str, ...] = core.check_feature_names(
            self._smile.feature_names, egemaps_feature_names()
        )
        self.extractor_version: str = core.extractor_version(
            opensmile.__version__, config.feature_set
        )

    def _check(self, signal: np.ndarray, sampling_rate: int, name: str) -> np.ndarray:
        return check_input_signal(signal, sampling_rate, expected_rate=TARGET_SAMPLING_RATE, name=name,
                                  rate_hint=" (the normalised signal)")

    def _vector(self, signal: np.ndarray, name: str) -> np.ndarray:
        frame = self._smile.process_signal(signal, TARGET_SAMPLING_RATE)
        return core.functionals_to_vector(frame, self.feature_names, name=name)

    def process_signal(
        self, signal: np.ndarray, sampling_rate: int, *, name: str = "signal"
    ) -> dict[str, float]:
        """Compute the 88 functionals of one clip.

        Args:
            signal: normalised mono float samples, shape ``(num_samples,)``.
            sampling_rate: in Hz; must be 16000.
            name: how to name the clip in errors.

        Returns:
            ``{feature name: value}`` in ``feature_names`` order.

        Raises:
            InvalidAudioError: another rate, not 1-D, NaN/inf, silence, or under 400 ms.
        """
        x = self._check(signal, sampling_rate, name)
        return core.vector_to_dict(self._vector(x, name), self.feature_names)

    def process_batch(
        self, signals: Sequence[np.ndarray], sampling_rate: int = TARGET_SAMPLING_RATE
    ) -> np.ndarray:
        """Compute the 88 functionals of each clip, checking every clip before processing any.

        Args:
            signals: normalised mono float signals (any lengths).
            sampling_rate: in Hz; must be 16000.

        Returns:
            float32 array of shape ``(len(signals), 88)``, columns in ``feature_names`` order.

        Raises:
            InvalidAudioError: for the first bad clip, named ``signals[i]``.
        """
        checked = [self._check(s, sampling_rate, f"signals[{i}]") for i, s in enumerate(signals)]
        out = np.empty((len(checked), len(self.feature_names)), dtype=np.float32)
        for i, x in enumerate(checked):
            out[i] = self._vector(x, f"signals[{i}]")
        return out

    def process_file(self, path: str | os.PathLike[str]) -> dict[str, float]:
        """Compute the 88 functionals of an audio file (decoded to 16 kHz mono first).

        Args:
            path: a WAV/FLAC/OGG/MP3 file, normally a normalised clip written by serlens.

        Raises:
            AudioDecodeError: the file is missing or not decodable.
            InvalidAudioError: the decoded signal is unusable (silence, under 400 ms...).
        """
        decoded = decode(path)
        return self.process_signal(decoded.signal, decoded.sampling_rate, name=str(path))
