"""Rows name the workdir's files relative to it, so a moved or copied workdir keeps them valid."""

from __future__ import annotations

from serlens.shared.workdir import Workdir


def test_paths_under_the_root_are_stored_relative_and_resolved_where_the_workdir_is(tmp_path):
    here = Workdir(tmp_path / "work")
    stored = here.relative(here.checkpoint_dir("k", 50))
    assert stored == "checkpoints/k/step-000050"
    moved = Workdir(tmp_path / "moved")
    assert moved.resolve(stored) == tmp_path / "moved" / "checkpoints" / "k" / "step-000050"


def test_paths_outside_the_root_and_rows_written_absolute_stay_as_they_are(tmp_path):
    work = Workdir(tmp_path / "work")
    source = tmp_path / "crema-d" / "1001_DFA_ANG_XX.wav"  # a dataset outside the workdir
    assert work.relative(source) == str(source)
    written_absolute = tmp_path / "old-work" / "audio" / "a.wav"  # a row of an older store
    assert work.resolve(str(written_absolute)) == written_absolute
    assert work.resolve(None) is None and work.resolve("") is None
    rows = [{"clip_id": "a", "normalized_path": "audio/k/a.wav"}, {"clip_id": "b", "normalized_path": None}]
    assert work.resolved(rows, "normalized_path") == [
        {"clip_id": "a", "normalized_path": str(tmp_path / "work" / "audio" / "k" / "a.wav")},
        {"clip_id": "b", "normalized_path": None},
    ]
