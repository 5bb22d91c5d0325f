"""Loudness normalisation as pure functions on arrays (no I/O, no Ray).

Loudness is ITU-R BS.1770-4 integrated loudness (K-weighting, 400 ms blocks with 75 %
overlap, -70 LUFS absolute and -10 LU relative gates), measured with pyloudnorm.
"""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm

from serlens.normalize.config import NormalizeConfig
from serlens.shared.errors import InvalidAudioError, InvalidConfigError
from serlens.shared.schema import LoudnessRecord

#: BS.1770 gating block, in seconds: the shortest signal whose loudness is defined.
BLOCK_S = 0.4

SHORT_POLICIES = ("reject", "tile_measure")
SILENCE_POLICIES = ("reject", "passthrough")
CLIPPING_POLICIES = ("limit", "clip")


def check_config(config: NormalizeConfig) -> None:
    """Raise unless every field of ``config`` is one the service understands.

    Raises:
        InvalidConfigError: naming the field, its value and what was expected.
    """
    for field, value, allowed in (
        ("short_policy", config.short_policy, SHORT_POLICIES),
        ("silence_policy", config.silence_policy, SILENCE_POLICIES),
        ("clipping_policy", config.clipping_policy, CLIPPING_POLICIES),
    ):
        if value not in allowed:
            raise InvalidConfigError(f"normalize.{field}: {value!r} is not one of {list(allowed)}")
    if not -70.0 <= config.target_lufs <= 0.0:
        raise InvalidConfigError(
            f"normalize.target_lufs: {config.target_lufs} is outside [-70, 0] LUFS"
        )
    if not config.peak_ceiling_dbfs <= 0.0:
        raise InvalidConfigError(
            f"normalize.peak_ceiling_dbfs: {config.peak_ceiling_dbfs} is above 0 dBFS"
        )


def peak_dbfs(signal: np.ndarray) -> float:
    """Sample peak in dBFS (``-inf`` for an all-zero signal)."""
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    return 20.0 * math.log10(peak) if peak > 0.0 else -math.inf


def block_samples(sampling_rate: int) -> int:
    """Return the samples in one 400 ms gating block at ``sampling_rate`` (Hz), rounded up."""
    return math.ceil(BLOCK_S * sampling_rate)


def integrated_loudness(
    signal: np.ndarray, sampling_rate: int, *, tile_short: bool = False
) -> float:
    """Integrated loudness in LUFS (``-inf`` when every block is under the -70 LUFS gate).

    Args:
        signal: mono float samples.
        sampling_rate: in Hz.
        tile_short: measure a signal shorter than 400 ms repeated periodically to 400 ms.

    Raises:
        InvalidAudioError: a signal shorter than 400 ms without ``tile_short``.
    """
    needed = block_samples(sampling_rate)
    x = np.asarray(signal, dtype=np.float64)
    if x.size < needed:
        if not tile_short or x.size == 0:
            raise InvalidAudioError(
                f"{x.size / sampling_rate * 1000:.0f} ms is shorter than one 400 ms "
                "loudness gating block"
            )
        x = np.resize(x, needed)
    return float(pyloudnorm.Meter(sampling_rate, block_size=BLOCK_S).integrated_loudness(x))


def _float32_ceiling(ceiling: float) -> np.float32:
    """Return the largest float32 not above ``ceiling`` (so a cast never lands past it)."""
    value = np.float32(ceiling)
    return np.nextafter(value, np.float32(0.0)) if float(value) > ceiling else value


def normalize_loudness(
    signal: np.ndarray,
    sampling_rate: int,
    *,
    config: NormalizeConfig,
    name: str = "signal",
) -> tuple[np.ndarray, LoudnessRecord]:
    """Scale a mono signal to ``config.target_lufs``, under the config's policies.

    The recorded policy is the most telling of what happened: ``silence_passthrough``;
    else ``limited`` or ``clipped`` when the peak had to be handled; else ``short_tiled``
    when the loudness was measured on the tiled clip; else ``normalized``.

    Args:
        signal: mono float samples (finite).
        sampling_rate: in Hz.
        config: target and policies.
        name: how to name the signal in errors.

    Returns:
        ``(output, record)``: float32 samples, every one within [-1, 1], and what was done.

    Raises:
        InvalidAudioError: a clip under 400 ms with ``short_policy="reject"``, or a silent one
            (loudness of minus infinity) with ``silence_policy="reject"``.
    """
    x = np.asarray(signal, dtype=np.float64)
    short = x.size < block_samples(sampling_rate)
    if short and config.short_policy == "reject":
        raise InvalidAudioError(
            f"{name}: {x.size / sampling_rate * 1000:.0f} ms is shorter than one 400 ms "
            "loudness gating block (normalize.short_policy=reject; 'tile_measure' measures "
            "it tiled to 400 ms)"
        )
    tile = config.short_policy == "tile_measure"
    try:
        lufs_before = integrated_loudness(x, sampling_rate, tile_short=tile)
    except InvalidAudioError as err:
        raise InvalidAudioError(f"{name}: {err}") from err

    if math.isinf(lufs_before):
        if config.silence_policy == "reject":
            raise InvalidAudioError(
                f"{name}: silence: loudness is -inf (every block under the -70 LUFS absolute gate; "
                "normalize.silence_policy=reject)"
            )
        out = np.clip(x, -1.0, 1.0).astype(np.float32)
        return out, LoudnessRecord(
            lufs_before=lufs_before,
            lufs_after=integrated_loudness(out, sampling_rate, tile_short=tile),
            gain_db=0.0,
            peak_dbfs=peak_dbfs(out),
            clipped_fraction=float(np.mean(np.abs(x) > 1.0)),
            policy="silence_passthrough",
        )

    gain = 10.0 ** ((config.target_lufs - lufs_before) / 20.0)
    plain = x * gain
    clipped_fraction = float(np.mean(np.abs(plain) > 1.0))
    policy = "short_tiled" if short else "normalized"
    if config.clipping_policy == "limit":
        ceiling = 10.0 ** (config.peak_ceiling_dbfs / 20.0)
        peak_in = float(np.max(np.abs(x)))
        if peak_in * gain > ceiling:
            gain = ceiling / peak_in
            policy = "limited"
        limit = _float32_ceiling(ceiling)
        out = np.clip((x * gain).astype(np.float32), -limit, limit)
    else:
        if clipped_fraction > 0.0:
            policy = "clipped"
        out = np.clip(plain, -1.0, 1.0).astype(np.float32)
    return out, LoudnessRecord(
        lufs_before=lufs_before,
        lufs_after=integrated_loudness(out, sampling_rate, tile_short=tile),
        gain_db=20.0 * math.log10(gain),
        peak_dbfs=peak_dbfs(out),
        clipped_fraction=clipped_fraction,
        policy=policy,
    )
