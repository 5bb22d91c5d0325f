"""The eGeMAPS group table covers the 88 names exactly once."""

from collections import Counter

import pytest

from serlens.egemaps.groups import GROUPS, feature_groups, group_of
from serlens.shared.schema import egemaps_feature_names


def test_every_name_has_exactly_one_group() -> None:
    names = egemaps_feature_names()
    table = feature_groups()
    assert len(names) == 88
    assert list(table) == list(names)
    assert set(table.values()) == set(GROUPS)


def test_group_sizes_follow_eyben_2016() -> None:
    counts = Counter(feature_groups().values())
    # F0 10, jitter 2, F1-3 frequency and bandwidth 12; loudness 10, shimmer 2, HNR 2, Leq 1;
    # the six temporal functionals; the rest spectral.
    assert counts == {"frequency": 24, "energy/amplitude": 15, "temporal": 6, "spectral balance": 43}


def test_unknown_name_is_refused() -> None:
    with pytest.raises(KeyError):
        group_of("not_a_feature")
