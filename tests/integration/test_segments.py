"""`serlens train` on a manifest of segments with a given split: real Ray, DuckDB, MLflow on sqlite."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.store_rows import open_catalogue
from test_study import serlens

from serlens.shared.audio import write_wav
from serlens.shared.testing import voiced

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: speaker -> (gender, split): each gender in every subset, as the study needs.
SPEAKERS = {"s0": ("F", "train"), "s1": ("F", "validation"), "s2": ("F", "analysis"),
            "s3": ("M", "train"), "s4": ("M", "validation"), "s5": ("M", "analysis")}


def test_segments_of_long_files_are_prepared_without_cutting_them(tmp_path: Path) -> None:
    rows = ["path,label,speaker,gender,start,end,split,sentence"]
    for n, (speaker, (gender, split)) in enumerate(SPEAKERS.items()):
        write_wav(tmp_path / f"{speaker}.wav", voiced(5.0, f0_hz=120 + 20 * n, seed=n), 16_000, subtype="PCM_16")
        for i in range(4):  # four 1.2 s turns per session, both labels
            rows.append(f"{speaker}.wav,{['ANG', 'SAD'][i % 2]},{speaker},{gender},{i * 1.25},{i * 1.25 + 1.2},"
                        f"{split},turn {i}")
    manifest = tmp_path / "sessions.csv"
    manifest.write_text("\n".join(rows) + "\n")
    workdir = tmp_path / "work"
    out = serlens("train", "--workdir", str(workdir), "--quiet", "--set", "dataset.kind=manifest",
                  "--set", f"dataset.path={manifest}", "--set", "dataset.labels=[ANG, SAD]",
                  "--set", "train.max_steps=1", "--set", "train.eval_every_steps=1",
                  "--set", "train.checkpoint_every_steps=1")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    with open_catalogue(workdir) as con:
        clips = con.execute("SELECT clip_id, speaker, start_s, end_s, split, subset, duration_s, sentence, "
                            "normalized_path FROM clips ORDER BY clip_id").fetchall()
    assert len(clips) == 24
    subsets = {"train": 1, "validation": 2, "analysis": 3}
    for clip_id, speaker, start_s, end_s, split, subset, duration_s, sentence, normalized in clips:
        assert clip_id == f"{speaker}_{start_s:g}-{end_s:g}" and split == SPEAKERS[speaker][1]
        assert subset == subsets[split] and duration_s == pytest.approx(1.2)
        # The normalised file, named relative to the workdir (a moved workdir keeps its rows valid).
        assert sentence.startswith("turn ") and normalized.startswith("audio/") and (workdir / normalized).is_file()
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == [f"{s}.wav" for s in SPEAKERS]  # nothing cut
