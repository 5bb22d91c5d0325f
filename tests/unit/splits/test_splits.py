from collections import Counter, defaultdict

import pytest

from serlens.shared.datasets import scan_crema_d
from serlens.shared.demo_corpus import write_demo_corpus
from serlens.shared.errors import InvalidConfigError, InvalidManifestError
from serlens.shared.schema import ClipRecord
from serlens.shared.splits import split_speakers
from serlens.shared.testing import crema_d_metadata


def _clip(clip_id, speaker, gender):
    return ClipRecord(
        clip_id=clip_id,
        dataset="t",
        source_path=f"/x/{clip_id}.wav",
        audio_sha256="0",
        speaker=speaker,
        gender=gender,
        label="NEU",
        duration_s=1.0,
        sampling_rate=16000,
    )


def _check_speaker_independent_and_stratified(clips, subsets):
    assert set(subsets) == {c.clip_id for c in clips}
    speaker_subsets = defaultdict(set)
    for clip in clips:
        speaker_subsets[clip.speaker].add(subsets[clip.clip_id])
    assert all(len(s) == 1 for s in speaker_subsets.values())  # no speaker in two subsets
    genders = {c.gender for c in clips}
    for subset in (1, 2, 3):
        assert {c.gender for c in clips if subsets[c.clip_id] == subset} == genders


@pytest.fixture(scope="module")
def crema_d_clips():
    metadata = crema_d_metadata()
    if metadata is None:
        pytest.skip("CREMA-D metadata (../shared/crema-d or $SERLENS_SHARED) not available")
    files, actors = metadata
    sex = {"Male": "M", "Female": "F"}
    return [
        _clip(name[:-4], name.split("_")[0], sex[actors[name.split("_")[0]]["Sex"]])
        for name, _ in files
    ]


def test_real_crema_d_split_matches_the_paper(crema_d_clips):
    assert len(crema_d_clips) == 7442 and len({c.speaker for c in crema_d_clips}) == 91
    for seed in (0, 1, 2):
        subsets = split_speakers(crema_d_clips, seed=seed)
        _check_speaker_independent_and_stratified(crema_d_clips, subsets)
        share = Counter(subsets.values())
        for subset, expected in ((1, 64.0), (2, 20.0), (3, 16.0)):
            assert abs(100 * share[subset] / len(crema_d_clips) - expected) < 3.0
        for subset in (1, 2, 3):  # each subset's gender mix is close to the corpus' 48 M / 43 F
            members = [c for c in crema_d_clips if subsets[c.clip_id] == subset]
            female = sum(c.gender == "F" for c in members) / len(members)
            assert abs(female - 43 / 91) < 0.05


def test_split_is_deterministic_order_free_and_seeded(crema_d_clips):
    first = split_speakers(crema_d_clips, seed=7)
    assert split_speakers(list(reversed(crema_d_clips)), seed=7) == first
    assert split_speakers(crema_d_clips, seed=8) != first


def test_demo_corpus_split(tmp_path):
    clips = scan_crema_d(
        write_demo_corpus(tmp_path, num_speakers=20, sentences_per_emotion=1)
    ).clips
    subsets = split_speakers(clips)
    _check_speaker_independent_and_stratified(clips, subsets)
    speakers = {s: {c.speaker for c in clips if subsets[c.clip_id] == s} for s in (1, 2, 3)}
    assert [len(speakers[s]) for s in (1, 2, 3)] == [12, 4, 4]  # per gender of 10: 6 / 2 / 2


def test_three_speakers_per_gender_give_one_per_subset():
    clips = [_clip(f"{g}{s}_{i}", f"{g}{s}", g) for g in "FM" for s in range(3) for i in range(2)]
    subsets = split_speakers(clips, seed=3)
    _check_speaker_independent_and_stratified(clips, subsets)
    assert Counter(subsets.values()) == {1: 4, 2: 4, 3: 4}


def test_too_few_speakers_name_the_gender():
    clips = [_clip(f"F{s}", f"F{s}", "F") for s in range(5)] + [
        _clip("M0", "M0", "M"),
        _clip("M1", "M1", "M"),
    ]
    with pytest.raises(InvalidManifestError, match="gender 'M': only 2 speaker"):
        split_speakers(clips)


def test_bad_inputs_are_refused():
    clips = [_clip(f"F{s}", f"F{s}", "F") for s in range(3)] + [
        _clip(f"M{s}", f"M{s}", "M") for s in range(3)
    ]
    with pytest.raises(InvalidConfigError, match="holdout_fraction=1.0"):
        split_speakers(clips, holdout_fraction=1.0)
    with pytest.raises(InvalidConfigError, match="validation_fraction=0"):
        split_speakers(clips, validation_fraction=0)
    with pytest.raises(InvalidManifestError, match="speaker 'F0'.*two genders"):
        split_speakers([*clips, _clip("F0b", "F0", "M")])
    with pytest.raises(InvalidManifestError, match="no clips"):
        split_speakers([])
