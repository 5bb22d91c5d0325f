"""The manifest's optional columns: ``start``/``end`` segments decoded alone, ``split`` and ``sentence``."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from serlens.shared.audio import AudioLimits, decode, sha256_file
from serlens.shared.datasets import scan_manifest
from serlens.shared.errors import InvalidAudioError, InvalidManifestError
from serlens.shared.rows import clip_row
from serlens.shared.schema import LoudnessRecord
from serlens.shared.splits import assign_subsets
from serlens.shared.store import FeatureStore
from serlens.shared.testing import voiced, write_manifest

RATE = 16_000


def _session(tmp_path, rate=RATE, seconds=3.0):
    """One long recording, as IEMOCAP and MSP-Podcast ship them."""
    path = tmp_path / "session.wav"
    sf.write(str(path), voiced(seconds, sampling_rate=rate, seed=3), rate, subtype="FLOAT")
    return path


def _row(**cells):
    return {"path": "session.wav", "label": "HAP", "speaker": "s1", "gender": "F", **cells}


def test_segments_are_decoded_alone_and_equal_the_slice_of_the_file(tmp_path):
    path = _session(tmp_path)
    whole = decode(path).signal
    part = decode(path, segment=(1.0, 2.5)).signal
    np.testing.assert_array_equal(part, whole[16_000:40_000])
    np.testing.assert_array_equal(decode(path, segment=(2.5, None)).signal, whole[40_000:])
    # The same bounded decode: the header bounds and the wall-time budget still apply.
    with pytest.raises(InvalidAudioError, match=r"session.wav \[1-2.5 s\]: decoding took longer than -1 s"):
        decode(path, segment=(1.0, 2.5), limits=AudioLimits(max_decode_s=-1.0))
    with pytest.raises(InvalidAudioError, match="3.0 s is longer than the 2 s maximum"):
        decode(path, segment=(0.0, 1.0), limits=AudioLimits(max_duration_s=2.0))


def test_a_resampled_segment_has_the_segment_length(tmp_path):
    part = decode(_session(tmp_path, rate=44_100), segment=(0.5, 1.75)).signal
    assert len(part) == pytest.approx(1.25 * RATE, abs=2)


def test_manifest_segments_become_clips_with_their_own_identity(tmp_path):
    path = _session(tmp_path)
    manifest = write_manifest(tmp_path, [_row(start="0", end="1"), _row(start="1", end="2.5", id="middle"),
                                         _row(start="2.5", end="")])
    scan = scan_manifest(manifest)
    assert scan.problems == ()
    assert [c.clip_id for c in scan.clips] == ["session_0-1", "middle", "session_2.5-end"]
    assert [c.duration_s for c in scan.clips] == pytest.approx([1.0, 1.5, 0.5])
    assert [(c.start_s, c.end_s) for c in scan.clips] == [(0.0, 1.0), (1.0, 2.5), (2.5, None)]
    hashes = {c.audio_sha256 for c in scan.clips}
    assert len(hashes) == 3 and sha256_file(path) not in hashes


def test_bad_segments_are_named(tmp_path):
    _session(tmp_path)
    manifest = write_manifest(tmp_path, [_row(start="2", end="1", id="a"), _row(start="-1", id="b"),
                                         _row(end="soon", id="c"), _row(start="2", end="9", id="d"),
                                         _row(start="0", end="0.2", id="e")])
    with pytest.raises(InvalidManifestError) as caught:
        scan_manifest(manifest).raise_for_problems()
    message = str(caught.value)
    assert "row 1 (id=a): end 1 s is not after start 2 s" in message
    assert "row 2 (id=b): start '-1' must be a finite number of seconds >= 0" in message
    assert "row 3 (id=c): end 'soon' is not a number of seconds" in message
    assert "row 4 (id=d)" in message and "the segment ends past the file's end (3.000 s)" in message
    assert "row 5 (id=e)" in message and "shorter than the 400 ms minimum" in message


def test_a_given_split_replaces_the_speaker_split(tmp_path):
    _session(tmp_path)
    rows = [_row(start=str(i * 0.5), end=str(i * 0.5 + 0.5), speaker=f"s{i}", split=split)
            for i, split in enumerate(["train", "Validation", "analysis", "train"])]
    scan = scan_manifest(write_manifest(tmp_path, rows))
    assert scan.problems == ()
    assert [c.split for c in scan.clips] == ["train", "validation", "analysis", "train"]
    # Four speakers of one gender are too few for serlens' own split; the given one is used as it is.
    assert list(assign_subsets(scan.clips).values()) == [1, 2, 3, 1]


def test_bad_split_values_and_speakers_in_two_splits_are_named(tmp_path):
    _session(tmp_path)
    rows = [_row(start="0", end="0.5", split="test"), _row(start="0.5", end="1", split=""),
            _row(start="1", end="1.5", split="train"), _row(start="1.5", end="2", split="analysis")]
    with pytest.raises(InvalidManifestError) as caught:
        scan_manifest(write_manifest(tmp_path, rows)).raise_for_problems()
    message = str(caught.value)
    assert "row 1 (id=session_0-0.5): 'test'; the split column needs one of ['train', 'validation', 'analysis']" \
        in message
    assert "row 2 (id=session_0.5-1): empty split" in message
    assert "speaker 's1': is in more than one split: analysis (rows 4), train (rows 3)" in message


def test_segments_split_and_sentence_reach_the_clips_table(tmp_path):
    _session(tmp_path)
    rows = [_row(start="0.5", end="1.5", split="analysis", sentence="It is eleven o'clock")]
    clip = scan_manifest(write_manifest(tmp_path, rows)).clips[0]
    loudness = LoudnessRecord(-30.0, -23.0, 7.0, -3.0, 0.0, "normalized")
    row = clip_row(clip_id=clip.clip_id, dataset="m", source_path=clip.source_path, audio_sha256=clip.audio_sha256,
                   num_samples=16_000, source_sampling_rate=RATE, source_num_channels=1, loudness=loudness,
                   target_lufs=-23.0, normalized_path="x.wav", normalized_sha256="0" * 64,
                   labels={"speaker": clip.speaker, "gender": clip.gender, "label": clip.label,
                           "sentence": clip.sentence, "subset": 3, "start_s": clip.start_s, "end_s": clip.end_s,
                           "split": clip.split})
    store = FeatureStore(tmp_path / "store")
    store.write("clips", [row], config_hash="k")
    stored = store.read("clips", columns=["start_s", "end_s", "split", "sentence", "subset"]).to_pylist()
    assert stored == [{"start_s": 0.5, "end_s": 1.5, "split": "analysis", "sentence": "It is eleven o'clock",
                       "subset": 3}]


def test_the_prepare_stage_normalises_only_the_segment(tmp_path):
    from serlens.normalize import NormalizeArgs, NormalizeService

    path = _session(tmp_path)
    service = NormalizeService(config=NormalizeArgs().to_config())
    signal, _, decoded = service.process_file(path, segment=(1.0, 2.5))
    expected, _ = service.process_signal(decode(path).signal[16_000:40_000], RATE)
    assert len(decoded.signal) == 24_000
    np.testing.assert_array_equal(signal, expected)
