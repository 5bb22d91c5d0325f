"""The eGeMAPSv02 parameter groups of Eyben et al. (2016), for every one of the 88 functionals.

The paper (IEEE Trans. Affective Computing 7(2), section 3) sorts the low-level descriptors
into frequency-related, energy/amplitude-related and spectral (balance) parameters, plus
temporal features. Each functional belongs to the group of its descriptor:

- frequency: pitch (F0), jitter, formant 1-3 frequencies and bandwidths;
- energy/amplitude: loudness, shimmer, harmonics-to-noise ratio, equivalent sound level;
- spectral balance: alpha ratio, Hammarberg index, spectral slopes, formant relative energies,
  H1-H2, H1-A3, MFCC 1-4 and spectral flux (the extended set's additions);
- temporal: loudness peak rate and the lengths and rate of voiced and unvoiced segments.
"""

from __future__ import annotations

from functools import lru_cache

from serlens.shared.schema import egemaps_feature_names

#: Group names, in the order figures show them.
GROUPS: tuple[str, ...] = ("frequency", "energy/amplitude", "spectral balance", "temporal")

#: Name prefix -> group; a functional's group is that of the one prefix its name starts with.
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("F0semitoneFrom27.5Hz", "frequency"),
    ("jitterLocal", "frequency"),
    ("F1frequency", "frequency"),
    ("F2frequency", "frequency"),
    ("F3frequency", "frequency"),
    ("F1bandwidth", "frequency"),
    ("F2bandwidth", "frequency"),
    ("F3bandwidth", "frequency"),
    ("loudness_sma3", "energy/amplitude"),
    ("shimmerLocaldB", "energy/amplitude"),
    ("HNRdBACF", "energy/amplitude"),
    ("equivalentSoundLevel", "energy/amplitude"),
    ("alphaRatio", "spectral balance"),
    ("hammarbergIndex", "spectral balance"),
    ("slopeV", "spectral balance"),
    ("slopeUV", "spectral balance"),
    ("F1amplitudeLogRelF0", "spectral balance"),
    ("F2amplitudeLogRelF0", "spectral balance"),
    ("F3amplitudeLogRelF0", "spectral balance"),
    ("logRelF0-H1-H2", "spectral balance"),
    ("logRelF0-H1-A3", "spectral balance"),
    ("mfcc", "spectral balance"),
    ("spectralFlux", "spectral balance"),
    ("loudnessPeaksPerSec", "temporal"),
    ("VoicedSegmentsPerSec", "temporal"),
    ("MeanVoicedSegmentLength", "temporal"),
    ("StddevVoicedSegmentLength", "temporal"),
    ("MeanUnvoicedSegmentLength", "temporal"),
    ("StddevUnvoicedSegmentLength", "temporal"),
)


def group_of(name: str) -> str:
    """The parameter group of one eGeMAPSv02 functional.

    Raises:
        KeyError: a name that no prefix (or more than one) matches.
    """
    matches = {group for prefix, group in _PREFIXES if name.startswith(prefix)}
    if len(matches) != 1:
        raise KeyError(f"eGeMAPS functional {name!r} matches groups {sorted(matches)}; expected one")
    return matches.pop()


@lru_cache(maxsize=1)
def feature_groups() -> dict[str, str]:
    """Every one of the 88 eGeMAPSv02 names (opensmile's order) -> its group."""
    return {name: group_of(name) for name in egemaps_feature_names()}
