"""Fail fast: everything the later stages need, checked before the first stage runs.

A run that would die in the probe stage after an hour of fine-tuning is refused up front,
with every problem in one message: too few speakers in a subset or of a gender, a label
missing where training, validation or the probes need it, too few analysis clips for an
estimator. The split is recomputed here (it is cheap and deterministic), so the checks see
exactly the subsets the run will use. With ``--skip-invalid`` the checks run on what remains.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from serlens.pipeline.config import StudyArgs
from serlens.shared.errors import InvalidInputError
from serlens.shared.schema import ClipRecord
from serlens.shared.splits import ANALYSIS, TRAIN, VALIDATION, assign_subsets

#: Subset names as the messages say them.
SUBSET_NAMES = {TRAIN: "subset 1 (training)", VALIDATION: "subset 2 (validation)", ANALYSIS: "subset 3 (analysis)"}
#: Debiased CKA's unbiased HSIC divides by (n - 3); fewer analysis clips than this leave it undefined.
MIN_ANALYSIS_CLIPS = 4
#: Speaker-grouped probes need a test, a validation and a train speaker (or nested CV's 3 folds).
MIN_GROUPED_SPEAKERS = 3
#: Partial CKA's residual degrees of freedom must leave the debiased estimator defined.
MIN_PARTIAL_DOF = 4


def check_study(args: StudyArgs, clips: Sequence[ClipRecord], subsets: dict[str, int] | None = None, *,
                analyses: bool = True) -> dict[str, int]:
    """Check that every stage of the study can run on these clips; returns the split.

    Args:
        args: the run's config.
        clips: the clips that remain after scanning (and skipping, with ``--skip-invalid``).
        subsets: the split already made (to recheck what remains after skipping); None: split now.
        analyses: also check what CKA and the probes need (not for ``serlens train``).

    Returns:
        ``clip_id -> subset`` (the split the run will use).

    Raises:
        InvalidManifestError: the split itself is impossible (its message names the culprits).
        InvalidInputError: anything a later stage needs is missing; every problem is named.
    """
    if subsets is None:
        subsets = assign_subsets(clips, seed=args.split.seed, holdout_fraction=args.split.holdout_fraction,
                                 validation_fraction=args.split.validation_fraction)
    problems = _subset_problems(args, clips, subsets)
    analysed = [c for c in clips if subsets[c.clip_id] == args.analysis.subset]
    if analyses:
        problems += _analysis_problems(args, analysed)
    if problems:
        raise InvalidInputError(problems, source="the run's data (checked before any stage runs)")
    return subsets


def _subset_problems(args: StudyArgs, clips: Sequence[ClipRecord], subsets: dict[str, int]) -> list[tuple[str, str]]:
    """Labels that training or validation lack, and subsets without a gender."""
    labels = list(args.dataset.labels)
    genders = sorted({c.gender for c in clips})
    problems: list[tuple[str, str]] = []
    for subset in (TRAIN, VALIDATION):
        members = [c for c in clips if subsets[c.clip_id] == subset]
        counts = Counter(c.label for c in members)
        missing = [label for label in labels if counts[label] == 0]
        if missing:
            problems.append((SUBSET_NAMES[subset], f"no clip labelled {', '.join(missing)} "
                                                   f"({len(members)} clip(s): {_counts(counts)})"))
    for subset in (TRAIN, VALIDATION, ANALYSIS):
        present = {c.gender for c in clips if subsets[c.clip_id] == subset}
        absent = [g for g in genders if g not in present]
        if absent:
            problems.append((SUBSET_NAMES[subset], f"no speaker of gender {', '.join(absent)}"))
    return problems


def _analysis_problems(args: StudyArgs, analysed: Sequence[ClipRecord]) -> list[tuple[str, str]]:
    """What the CKA and probe stages need of the analysis subset."""
    name = SUBSET_NAMES[args.analysis.subset]
    problems: list[tuple[str, str]] = []
    if len(analysed) < MIN_ANALYSIS_CLIPS:
        problems.append((name, f"{len(analysed)} clip(s); debiased CKA needs at least {MIN_ANALYSIS_CLIPS}"))
    counts = Counter(c.label for c in analysed)
    if args.probe.protocol == "paper":
        needed = probe_clips_per_class(args)
        for label in args.dataset.labels:
            if counts[label] < needed:
                problems.append((f"{name}, class {label!r}",
                                 f"{counts[label]} clip(s); the probes' {tuple(args.probe.split)} split "
                                 f"needs at least {needed} per class"))
    speakers = len({c.speaker for c in analysed})
    if (args.probe.protocol == "grouped_cv" or args.probe.ridge) and speakers < MIN_GROUPED_SPEAKERS:
        problems.append((name, f"{speakers} speaker(s); speaker-grouped probes (probe.protocol: grouped_cv, "
                               f"probe.ridge) need at least {MIN_GROUPED_SPEAKERS}"))
    if speakers < 2:
        problems.append((name, f"{speakers} speaker(s); the delete-one-speaker jackknife needs at least 2"))
    dof = _partial_dof(args, analysed)
    if dof is not None and dof < MIN_PARTIAL_DOF:
        problems.append((name, f"regressing out {', '.join(args.cka.confounds)} leaves {dof} degree(s) of freedom; "
                               f"partial CKA needs at least {MIN_PARTIAL_DOF} (fewer cka.confounds or more clips)"))
    return problems


def probe_clips_per_class(args: StudyArgs) -> int:
    """Fewest analysis clips per class the ``paper`` protocol's stratified split needs."""
    from serlens.probe.core import min_clips_per_class

    return min_clips_per_class(args.probe.split)


def _partial_dof(args: StudyArgs, analysed: Sequence[ClipRecord]) -> int | None:
    """Residual degrees of freedom of partial CKA's one-hot confound design (None: no confounds)."""
    factors = [[getattr(c, name) for c in analysed] for name in args.cka.confounds]
    factors = [values for values in factors if None not in values]
    if not factors or not analysed:
        return None
    columns = [np.ones(len(analysed))]
    for values in factors:
        levels = sorted(set(values))
        columns += [np.array([v == level for v in values], dtype=float) for level in levels[1:]]
    return len(analysed) - int(np.linalg.matrix_rank(np.column_stack(columns)))


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{label} {n}" for label, n in sorted(counts.items())) or "none"
