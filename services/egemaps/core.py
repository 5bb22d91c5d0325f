"""Pure helpers of the eGeMAPS service: naming the extractor and shaping openSMILE's output."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from serlens.shared.errors import ServiceError

#: openSMILE's eGeMAPSv02 has exactly this many functionals.
NUM_EGEMAPS_FEATURES = 88


def extractor_version(
    opensmile_version: str, feature_set: str, feature_level: str = "Functionals"
) -> str:
    """Name the extractor for the lineage column of every eGeMAPS row.

    Args:
        opensmile_version: the installed opensmile package version, e.g. ``2.6.0``.
        feature_set: e.g. ``eGeMAPSv02``.
        feature_level: e.g. ``Functionals``.

    Returns:
        e.g. ``opensmile-2.6.0/eGeMAPSv02/Functionals``.
    """
    return f"opensmile-{opensmile_version}/{feature_set}/{feature_level}"


def check_feature_names(names: Sequence[str], expected: Sequence[str]) -> tuple[str, ...]:
    """Return ``names`` as a tuple if they are exactly the expected 88, in the same order.

    Args:
        names: the names an extractor reports.
        expected: the canonical names (``serlens.shared.schema.egemaps_feature_names()``).

    Raises:
        ServiceError: when the count, a name, or the order differs; the message names them.
    """
    names, expected = tuple(names), tuple(expected)
    if len(expected) != NUM_EGEMAPS_FEATURES:
        raise ServiceError(
            f"canonical eGeMAPS list has {len(expected)} names, expected {NUM_EGEMAPS_FEATURES}"
        )
    if names == expected:
        return names
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing or extra:
        raise ServiceError(
            f"extractor reports {len(names)} features, expected the {len(expected)} eGeMAPSv02 "
            f"functionals; missing {missing[:5]}, unexpected {extra[:5]}"
        )
    first = next(i for i, (a, b) in enumerate(zip(names, expected, strict=True)) if a != b)
    raise ServiceError(
        f"extractor reports the eGeMAPSv02 features in another order: position {first} is "
        f"{names[first]!r}, expected {expected[first]!r}"
    )


def functionals_to_vector(
    frame: pd.DataFrame, feature_names: Sequence[str], *, name: str = "signal"
) -> np.ndarray:
    """Turn openSMILE's one-row functionals table into a float32 vector in canonical order.

    Args:
        frame: ``Smile.process_signal`` output: one row, one column per feature.
        feature_names: the canonical column order.
        name: how to name the clip in errors.

    Returns:
        float32 array of shape ``(len(feature_names),)``.

    Raises:
        ServiceError: when the table has not exactly one row or lacks a feature.
    """
    if len(frame) != 1:
        raise ServiceError(
            f"{name}: openSMILE returned {len(frame)} rows of functionals, expected 1"
        )
    missing = [n for n in feature_names if n not in frame.columns]
    if missing:
        raise ServiceError(
            f"{name}: openSMILE output lacks {len(missing)} feature(s), e.g. {missing[:3]}"
        )
    return frame.loc[:, list(feature_names)].to_numpy(dtype=np.float32)[0]


def vector_to_dict(vector: np.ndarray, feature_names: Sequence[str]) -> dict[str, float]:
    """Map a feature vector to ``{feature name: value}`` (Python floats, canonical order)."""
    return {n: float(v) for n, v in zip(feature_names, vector, strict=True)}
