"""The voice of the demo corpus: a small source-filter speech synthesiser.

A glottal source (Rosenberg pulses with an F0 contour, jitter and shimmer), aspiration noise,
spectral tilt, and vowel formant filters that change per syllable, under a syllable-rate
envelope. ``serlens.shared.demo_corpus`` decides what each clip says and how (emotion,
speaker); this module turns that into samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as scipy_signal

from serlens.shared.audio import TARGET_SAMPLING_RATE

# Vowel formants (F1, F2, F3) in Hz for an adult male vocal tract (Peterson & Barney-like);
# F4 and F5 are fixed. Other speakers scale them with their vocal-tract length.
VOWELS = np.array(
    [
        (730, 1090, 2440),  # a
        (270, 2290, 3010),  # i
        (300, 870, 2240),  # u
        (530, 1840, 2480),  # e
        (570, 840, 2410),  # o
        (660, 1720, 2410),  # ae
    ],
    dtype=np.float64,
)
_HIGH_FORMANTS = (3500.0, 4500.0)
_BANDWIDTHS_HZ = (70.0, 100.0, 160.0, 220.0, 280.0)

# Clip length bounds in seconds: speech part at most _MAX_SPEECH_S, whole clip at least _MIN_CLIP_S.
_MAX_SPEECH_S = 2.5
_MIN_CLIP_S = 1.05


@dataclass(frozen=True)
class VoiceProfile:
    """Prosody and voice quality of one utterance style.

    Attributes:
        f0_scale: multiplies the speaker's F0 level.
        f0_range_st: pitch movement in semitones (accents, declination).
        level_db: level relative to neutral, in dB.
        rate_scale: multiplies the speaker's syllable rate.
        jitter: relative period-to-period perturbation (0.01 = 1 %).
        shimmer: relative period-to-period amplitude perturbation.
        tilt: one-pole low-pass coefficient on the source (higher: steeper spectral tilt).
        open_quotient: fraction of each glottal period that is open (higher: breathier, softer).
        breathiness: aspiration noise relative to the voiced source.
        f1_scale: multiplies the first formant (wider mouth opening raises F1).
    """

    f0_scale: float
    f0_range_st: float
    level_db: float
    rate_scale: float
    jitter: float
    shimmer: float
    tilt: float
    open_quotient: float
    breathiness: float
    f1_scale: float


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: identity and voice offsets.

    Attributes:
        actor_id: CREMA-D-style ActorID (9001..).
        sex: ``Male`` or ``Female`` (CREMA-D's spelling).
        age: in years.
        f0_hz: habitual F0 in Hz.
        range_scale: multiplies every F0 range.
        formant_scale: vocal-tract length factor (1.0 = adult male average).
        syllable_rate: habitual syllables per second.
        level_db: habitual level offset, in dB.
        jitter_scale: multiplies every jitter and shimmer.
        tilt_offset: added to every tilt coefficient.
        open_quotient_offset: added to every open quotient.
    """

    actor_id: int
    sex: str
    age: int
    f0_hz: float
    range_scale: float
    formant_scale: float
    syllable_rate: float
    level_db: float
    jitter_scale: float
    tilt_offset: float
    open_quotient_offset: float


def _resonator_sos(frequencies_hz: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Cascade of two-pole resonators (one per formant), unit gain at DC, as SOS rows."""
    sos = np.zeros((len(frequencies_hz), 6))
    for row, (freq, bandwidth) in enumerate(zip(frequencies_hz, _BANDWIDTHS_HZ, strict=True)):
        radius = np.exp(-np.pi * bandwidth / sampling_rate)
        a1 = -2.0 * radius * np.cos(2.0 * np.pi * min(freq, 0.45 * sampling_rate) / sampling_rate)
        a2 = radius * radius
        sos[row] = (1.0 + a1 + a2, 0.0, 0.0, 1.0, a1, a2)
    return sos


def _glottal_source(
    f0_contour: np.ndarray,
    rng: np.random.Generator,
    *,
    jitter: float,
    shimmer: float,
    open_quotient: float,
    sampling_rate: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg glottal flow following ``f0_contour`` (Hz, one value per sample).

    Returns:
        ``(flow derivative, flow)``, one value per sample.
    """
    # Draw one jitter and one shimmer factor per period: periods are found on the
    # unperturbed phase, then the perturbed F0 is integrated again.
    max_periods = int(np.sum(f0_contour) / sampling_rate) + 4
    jitter_factor = 1.0 + jitter * rng.standard_normal(max_periods)
    shimmer_factor = np.clip(1.0 + shimmer * rng.standard_normal(max_periods), 0.2, None)
    period = np.floor(np.cumsum(f0_contour) / sampling_rate).astype(np.int64)
    phase = np.cumsum(f0_contour * jitter_factor[period]) / sampling_rate
    period = np.minimum(np.floor(phase).astype(np.int64), max_periods - 1)
    frac = phase - np.floor(phase)
    rise, fall = open_quotient * 2.0 / 3.0, open_quotient / 3.0
    flow = np.where(
        frac < rise,
        0.5 * (1.0 - np.cos(np.pi * frac / rise)),
        np.where(frac < rise + fall, np.cos(0.5 * np.pi * (frac - rise) / fall), 0.0),
    )
    flow *= shimmer_factor[period]
    return np.diff(flow, prepend=0.0), flow


def synthesize(
    profile: VoiceProfile,
    speaker: Speaker,
    rng: np.random.Generator,
    *,
    num_syllables: int,
    vowels: np.ndarray,
    sampling_rate: int = TARGET_SAMPLING_RATE,
) -> np.ndarray:
    """Synthesise one utterance (float64, peak 1) for a speaker speaking in a profile.

    Args:
        profile: the utterance's prosody and voice quality (already varied per clip).
        speaker: whose voice.
        rng: random source for this clip (timing, accents, jitter, noise).
        num_syllables: syllables in the utterance.
        vowels: vowel index (into the formant table) per syllable.
        sampling_rate: in Hz.
    """
    bounds, syllable_s, lead_s, num_samples = _syllable_timing(profile, speaker, rng, num_syllables, sampling_rate)
    num_syllables = len(syllable_s)
    vowels = vowels[:num_syllables]
    f0_contour = _f0_contour(profile, speaker, rng, bounds, syllable_s, lead_s, num_samples, sampling_rate)
    source, flow = _glottal_source(
        f0_contour,
        rng,
        jitter=profile.jitter * speaker.jitter_scale,
        shimmer=profile.shimmer * speaker.jitter_scale,
        open_quotient=float(
            np.clip(profile.open_quotient + speaker.open_quotient_offset, 0.3, 0.9)
        ),
        sampling_rate=sampling_rate,
    )
    source = source / (np.std(source) + 1e-12)
    aspiration = rng.standard_normal(num_samples) * (0.3 + flow) * profile.breathiness * 4.0
    tilt = float(np.clip(profile.tilt + speaker.tilt_offset, 0.3, 0.97))
    source = scipy_signal.lfilter([1.0 - tilt], [1.0, -tilt], source + aspiration)
    voicing, noise = _envelopes(rng, bounds, num_samples)
    out = _vowel_filter(profile, speaker, source * voicing, bounds, vowels, sampling_rate)
    out = out + noise * np.std(out) * 3.0
    return out / (np.max(np.abs(out)) + 1e-12)


def _syllable_timing(
    profile: VoiceProfile, speaker: Speaker, rng: np.random.Generator, num_syllables: int, sampling_rate: int
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Syllable boundaries (samples), durations (s), lead-in (s) and the clip's length (samples)."""
    rate = speaker.syllable_rate * profile.rate_scale
    syllable_s = rng.uniform(0.75, 1.25, num_syllables) / rate
    lead_s, tail_s = rng.uniform(0.08, 0.2), rng.uniform(0.1, 0.25)
    # Keep clips within CREMA-D-like 1-3 s: slow speakers say fewer syllables, not faster ones.
    num_syllables = max(1, int(np.searchsorted(np.cumsum(syllable_s), _MAX_SPEECH_S, side="right")))
    syllable_s = syllable_s[:num_syllables]
    tail_s = max(tail_s, _MIN_CLIP_S - lead_s - float(np.sum(syllable_s)))
    bounds = np.round(
        np.concatenate([[lead_s], lead_s + np.cumsum(syllable_s)]) * sampling_rate
    ).astype(int)
    return bounds, syllable_s, float(lead_s), int(bounds[-1] + int(tail_s * sampling_rate))


def _f0_contour(
    profile: VoiceProfile,
    speaker: Speaker,
    rng: np.random.Generator,
    bounds: np.ndarray,
    syllable_s: np.ndarray,
    lead_s: float,
    num_samples: int,
    sampling_rate: int,
) -> np.ndarray:
    """F0 in Hz per sample: declination across the utterance, accents on some syllables, slow drift."""
    num_syllables = len(syllable_s)
    time_s = np.arange(num_samples) / sampling_rate
    centres = 0.5 * (bounds[:-1] + bounds[1:]) / sampling_rate
    accents = rng.uniform(0.3, 1.0, num_syllables) * (rng.random(num_syllables) < 0.45)
    accents[0] = max(accents[0], 0.6)
    spread = 0.35 * syllable_s
    shape = np.sum(
        accents[:, None]
        * np.exp(-0.5 * ((time_s[None, :] - centres[:, None]) / spread[:, None]) ** 2),
        0,
    )
    position = np.clip((time_s - lead_s) / (bounds[-1] / sampling_rate - lead_s), 0.0, 1.0)
    drift = np.cumsum(rng.standard_normal(num_samples)) / np.sqrt(sampling_rate) * 0.15
    shape = shape + 0.4 - position + drift
    range_st = profile.f0_range_st * speaker.range_scale
    return speaker.f0_hz * profile.f0_scale * 2.0 ** (range_st * shape / 12.0)


def _envelopes(rng: np.random.Generator, bounds: np.ndarray, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Voicing per sample (each syllable opens with an unvoiced consonant, then a vowel) and frication noise."""
    voicing = np.zeros(num_samples)
    fricative = np.zeros(num_samples)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        onset = start + int((stop - start) * rng.uniform(0.15, 0.35))
        voicing[onset:stop] = np.sin(np.linspace(0.0, np.pi, stop - onset)) ** 0.6
        if rng.random() < 0.6:
            fricative[start:onset] = np.hanning(onset - start) * rng.uniform(0.05, 0.2)
    noise = scipy_signal.lfilter([1.0, -0.95], [1.0], rng.standard_normal(num_samples)) * fricative
    return voicing, noise


def _vowel_filter(
    profile: VoiceProfile,
    speaker: Speaker,
    excitation: np.ndarray,
    bounds: np.ndarray,
    vowels: np.ndarray,
    sampling_rate: int,
) -> np.ndarray:
    """Vowel formants, changed per syllable; the filter state carries across boundaries."""
    num_samples, num_syllables = len(excitation), len(vowels)
    out = np.zeros(num_samples)
    state = np.zeros((5, 2))
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if index == num_syllables - 1:
            stop = num_samples
        formants = np.concatenate([VOWELS[vowels[index]], _HIGH_FORMANTS]) * speaker.formant_scale
        formants[0] *= profile.f1_scale
        sos = _resonator_sos(formants, sampling_rate)
        segment = slice(0 if index == 0 else start, stop)
        out[segment], state = scipy_signal.sosfilt(sos, excitation[segment], zi=state)
    return out
