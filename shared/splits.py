"""The paper's speaker-independent, gender-stratified, two-phase 80/20 split.

Phase 1 holds out ``validation_fraction`` of each gender's speakers as subset 2 (validation);
phase 2 holds out ``holdout_fraction`` of the remaining speakers as subset 3 (analysis: CKA and
probes); the rest is subset 1 (fine-tuning). With the defaults this gives about 64 / 20 / 16 %
of the speakers (and, with even clip counts per speaker, of the clips), as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from serlens.shared.errors import InvalidConfigError, InvalidManifestError
from serlens.shared.schema import ClipRecord

TRAIN, VALIDATION, ANALYSIS = 1, 2, 3

#: A gender needs this many speakers to put at least one in every subset.
MIN_SPEAKERS_PER_GENDER = 3


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def subset_sizes(
    num_speakers: int, *, holdout_fraction: float, validation_fraction: float
) -> tuple[int, int, int]:
    """Speakers per subset (train, validation, analysis) for one gender, each at least 1.

    Args:
        num_speakers: speakers of the gender (at least ``MIN_SPEAKERS_PER_GENDER``).
        holdout_fraction: phase 2's share of the speakers left after phase 1.
        validation_fraction: phase 1's share of all speakers.
    """
    validation = min(max(1, _round_half_up(validation_fraction * num_speakers)), num_speakers - 2)
    rest = num_speakers - validation
    analysis = min(max(1, _round_half_up(holdout_fraction * rest)), rest - 1)
    return rest - analysis, validation, analysis


def split_speakers(
    clips: Sequence[ClipRecord],
    *,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    validation_fraction: float = 0.2,
) -> dict[str, int]:
    """Assign every clip to subset 1 (train), 2 (validation) or 3 (analysis) by its speaker.

    No speaker is in two subsets; each gender's speakers are split separately, so each
    subset holds at least one speaker of each gender. The result depends only on the
    clips' speakers and genders and on ``seed``, not on their order.

    Args:
        clips: the dataset's clips.
        seed: random seed of the speaker shuffle.
        holdout_fraction: share of the speakers left after phase 1 that go to subset 3, in (0, 1).
        validation_fraction: share of all speakers that go to subset 2, in (0, 1).

    Returns:
        ``clip_id -> subset``.

    Raises:
        InvalidConfigError: a fraction outside (0, 1).
        InvalidManifestError: no clips, a duplicate clip id, a speaker with two genders, or a
            gender with fewer than three speakers (named in the message).
    """
    for name, value in (
        ("holdout_fraction", holdout_fraction),
        ("validation_fraction", validation_fraction),
    ):
        if not 0.0 < value < 1.0:
            raise InvalidConfigError(
                f"{name}={value}: expected a fraction strictly between 0 and 1"
            )
    speakers_by_gender = _speakers_by_gender(clips)
    subset_of_speaker: dict[str, int] = {}
    for gender, speakers in sorted(speakers_by_gender.items()):
        # One generator per gender, seeded by its name: adding a gender leaves the
        # other genders' split unchanged.
        rng = np.random.default_rng([seed, *gender.encode()])
        ordered = sorted(speakers)
        order = [ordered[i] for i in rng.permutation(len(ordered))]
        train, validation, _ = subset_sizes(
            len(order), holdout_fraction=holdout_fraction, validation_fraction=validation_fraction
        )
        for position, speaker in enumerate(order):
            subset_of_speaker[speaker] = (
                VALIDATION
                if position < validation
                else TRAIN
                if position < validation + train
                else ANALYSIS
            )
    return {clip.clip_id: subset_of_speaker[clip.speaker] for clip in clips}


def assign_subsets(clips: Sequence[ClipRecord], *, seed: int = 0, **fractions: float) -> dict[str, int]:
    """The split a run uses: the manifest's own (``ClipRecord.split``) when it gives one, else ``split_speakers``.

    A manifest with a ``split`` column gives it on every row (``serlens.shared.manifest``
    checks that, and that no speaker is in two subsets); ``train``, ``validation`` and
    ``analysis`` are subsets 1, 2 and 3.

    Args:
        clips: the dataset's clips.
        seed: ``split_speakers``' seed.
        fractions: ``split_speakers``' ``holdout_fraction`` and ``validation_fraction``.

    Raises:
        InvalidManifestError: some clips carry a split and others do not, or as ``split_speakers``.
        InvalidConfigError: as ``split_speakers``.
    """
    from serlens.shared.manifest import SPLIT_VALUES

    given = [c for c in clips if c.split is not None]
    if not given:
        return split_speakers(clips, seed=seed, **fractions)
    if len(given) != len(clips):
        missing = [c.clip_id for c in clips if c.split is None][:5]
        raise InvalidManifestError([("split", f"{len(clips) - len(given)} clip(s) have no split (e.g. {missing}); "
                                              "give it on every row or on none")], source="split")
    return {c.clip_id: SPLIT_VALUES[c.split] for c in given if c.split is not None}


def _speakers_by_gender(clips: Sequence[ClipRecord]) -> dict[str, list[str]]:
    """Each gender's speakers, after checking that the clips can be split at all.

    Raises:
        InvalidManifestError: no clips, a duplicate clip id, a speaker with two genders, or a
            gender with too few speakers (every problem named).
    """
    if not clips:
        raise InvalidManifestError([("clips", "nothing to split: no clips")], source="split")
    problems: list[tuple[str, str]] = []
    gender_of: dict[str, str] = {}
    seen: set[str] = set()
    for clip in clips:
        if clip.clip_id in seen:
            problems.append((f"clip {clip.clip_id!r}", "duplicate clip id"))
        seen.add(clip.clip_id)
        known = gender_of.setdefault(clip.speaker, clip.gender)
        if known != clip.gender:
            problems.append(
                (f"speaker {clip.speaker!r}", f"has two genders: {known!r} and {clip.gender!r}")
            )
    speakers_by_gender: dict[str, list[str]] = {}
    for speaker, gender in gender_of.items():
        speakers_by_gender.setdefault(gender, []).append(speaker)
    for gender, speakers in sorted(speakers_by_gender.items()):
        if len(speakers) < MIN_SPEAKERS_PER_GENDER:
            problems.append(
                (
                    f"gender {gender!r}",
                    f"only {len(speakers)} speaker(s) ({', '.join(sorted(speakers))}); "
                    f"a speaker-independent split needs at least {MIN_SPEAKERS_PER_GENDER}",
                )
            )
    if problems:
        raise InvalidManifestError(list(dict.fromkeys(problems)), source="split")
    return speakers_by_gender
