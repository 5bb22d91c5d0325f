"""``NormalizeService``: decode to 16 kHz mono, then bring the clip to the target loudness.

A plain class with no Ray import; the pipeline builds one per Ray task.
"""

from __future__ import annotations

import os

import numpy as np

from serlens.normalize import core
from serlens.normalize.config import NormalizeConfig
from serlens.shared.audio import TARGET_SAMPLING_RATE, DecodedAudio, check_input_signal, decode
from serlens.shared.schema import LoudnessRecord


class NormalizeService:
    """Loudness normalisation (ITU-R BS.1770-4) of 16 kHz mono signals and files.

    Args:
        config: target loudness and the short, silence and clipping policies.

    Raises:
        InvalidConfigError: a policy or value the service does not know.
    """

    def __init__(self, *, config: NormalizeConfig) -> None:
        core.check_config(config)
        self.config = config

    def process_signal(
        self, signal: np.ndarray, sampling_rate: int, *, name: str = "signal"
    ) -> tuple[np.ndarray, LoudnessRecord]:
        """Normalise a decoded signal.

        Args:
            signal: mono float samples at 16 kHz, shape ``(num_samples,)``.
            sampling_rate: in Hz; must be 16000.
            name: how to name the signal in errors.

        Returns:
            ``(output, record)``: float32 16 kHz samples within [-1, 1], and what was done.

        Raises:
            InvalidAudioError: not a 1-D float array, empty, NaN or infinite samples, another
                sampling rate, or refused by the short or silence policy.
        """
        # Duration and silence are the short and silence policies' to decide, not refused here.
        x = check_input_signal(signal, sampling_rate, expected_rate=TARGET_SAMPLING_RATE, name=name,
                               rate_hint=" (decode with serlens.shared.audio.decode first)", min_duration_s=0.0,
                               allow_silence=True)
        return core.normalize_loudness(x, sampling_rate, config=self.config, name=name)

    def process_file(
        self, path: str | os.PathLike[str], *, segment: tuple[float | None, float | None] | None = None
    ) -> tuple[np.ndarray, LoudnessRecord, DecodedAudio]:
        """Decode a file to 16 kHz mono (any rate, channels, WAV/FLAC/OGG/MP3), then normalise.

        Args:
            path: the audio file.
            segment: ``(start_s, end_s)`` to decode only that part (None: the whole file).

        Returns:
            ``(output, record, decoded)``: the normalised float32 16 kHz signal, what was done,
            and the decoded input (with its source rate and channel count).

        Raises:
            AudioDecodeError: empty, truncated or non-audio file.
            UnsupportedMediaTypeError: a container other than WAV, FLAC, OGG, MP3.
            InvalidAudioError: NaN samples, or refused by the short or silence policy.
        """
        decoded = decode(path, segment=segment)
        signal, record = self.process_signal(decoded.signal, decoded.sampling_rate, name=str(path))
        return signal, record, decoded
