"""Fail fast: what later stages need is checked before any stage runs, all problems at once."""

from __future__ import annotations

import pytest

from serlens.pipeline.config import StudyArgs
from serlens.pipeline.preflight import check_study
from serlens.shared.errors import InvalidInputError
from serlens.shared.schema import EMOTIONS, ClipRecord
from serlens.shared.splits import ANALYSIS, VALIDATION, split_speakers

ARGS = StudyArgs()
PAPER = StudyArgs.model_validate({"probe": {"protocol": "paper"}})


def _clips(per_label: int = 2, speakers: int = 20, sentences: bool = False) -> list[ClipRecord]:
    return [
        ClipRecord(clip_id=f"{s:04d}_{label}_{i}", dataset="t", source_path=f"/x/{s}_{label}_{i}.wav",
                   audio_sha256=f"{s}{label}{i}", speaker=f"{s:04d}", gender="F" if s % 2 else "M",
                   label=label, duration_s=2.0, sampling_rate=16_000,
                   sentence=f"{s}{label}{i}" if sentences else None)
        for s in range(speakers) for label in EMOTIONS for i in range(per_label)
    ]


def _subsets(clips):
    return split_speakers(clips, seed=ARGS.split.seed, holdout_fraction=ARGS.split.holdout_fraction,
                          validation_fraction=ARGS.split.validation_fraction)


def test_a_workable_dataset_passes_and_returns_the_split():
    clips = _clips()
    assert check_study(ARGS, clips) == _subsets(clips)


def test_every_problem_is_named_in_one_message():
    clips = _clips()
    subsets = _subsets(clips)
    # validation loses every NEU clip; the analysis subset keeps one SAD clip per... only one in all
    analysis_sad = [c for c in clips if subsets[c.clip_id] == ANALYSIS and c.label == "SAD"]
    dropped = {c.clip_id for c in clips if subsets[c.clip_id] == VALIDATION and c.label == "NEU"}
    dropped |= {c.clip_id for c in analysis_sad[1:]}
    with pytest.raises(InvalidInputError) as info:
        check_study(PAPER, [c for c in clips if c.clip_id not in dropped])
    culprits = dict(info.value.problems)
    assert "no clip labelled NEU" in culprits["subset 2 (validation)"]
    assert culprits["subset 3 (analysis), class 'SAD'"].startswith("1 clip(s); the probes'")
    assert "needs at least 3 per class" in culprits["subset 3 (analysis), class 'SAD'"]
    assert len(info.value.problems) == 2


def test_recheck_after_skipping_uses_the_same_split():
    clips = _clips()
    subsets = _subsets(clips)
    keep = [c for c in clips if not (subsets[c.clip_id] == ANALYSIS and c.label == "ANG")]
    with pytest.raises(InvalidInputError, match="class 'ANG'"):
        check_study(PAPER, keep, subsets)


def test_grouped_probes_need_three_analysis_speakers_and_partial_cka_its_degrees_of_freedom():
    clips = _clips()
    subsets = _subsets(clips)
    analysis_speakers = sorted({c.speaker for c in clips if subsets[c.clip_id] == ANALYSIS})
    keep = [c for c in clips if subsets[c.clip_id] != ANALYSIS or c.speaker == analysis_speakers[0]]
    with pytest.raises(InvalidInputError) as info:
        check_study(ARGS, keep, subsets)
    reasons = " | ".join(reason for _, reason in info.value.problems)
    assert "speaker-grouped probes" in reasons and "jackknife needs at least 2" in reasons


def test_partial_cka_needs_residual_degrees_of_freedom():
    # every clip its own sentence: regressing sentence out leaves nothing
    with pytest.raises(InvalidInputError, match="partial CKA needs at least 4"):
        check_study(ARGS, _clips(sentences=True))
