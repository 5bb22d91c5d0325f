"""Commits, not globs: stage rows appear all at once, records are relative and verifiable."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from support.store_rows import checkpoint, clip, store_cli

from serlens.shared.store import FeatureStore, run_readonly_query
from serlens.shared.store.files import sha256_file


def test_a_stage_is_invisible_until_marked_and_a_rerun_resumes_without_duplicates(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    store.write("clips", [clip(i) for i in range(3)], config_hash="K", stage="prepare")
    store.write("clips", [clip(i) for i in range(3, 5)], config_hash="K", stage="prepare")
    # Written by the stage's workers, not committed: readers see nothing, the resume logic sees all.
    assert store.read("clips").num_rows == 0
    assert run_readonly_query(store, "SELECT count(*) FROM clips")[1] == [(0,)]
    assert store.keys_present("clips", ["clip_id"]) == {(f"c{i:05d}",) for i in range(5)}
    assert store.pending_rows("prepare", "K") == 5
    assert not store.stage_done("prepare", "K")
    # The driver "crashed"; the rerun (a new process: a new store object) skips what is there,
    # writes the rest (one clip twice), and its mark commits old and new rows together.
    rerun = FeatureStore(store.root)
    done = rerun.keys_present("clips", ["clip_id"])
    rerun.write("clips", [clip(i) for i in range(4, 8) if (f"c{i:05d}",) not in done or i == 4],
                config_hash="K", stage="prepare")
    rerun.mark_stage("prepare", "K", rows=8, seconds=1.0)
    assert rerun.stage_done("prepare", "K")
    ids = rerun.read("clips").column("clip_id").to_pylist()
    assert sorted(ids) == [f"c{i:05d}" for i in range(8)]  # every clip once
    assert run_readonly_query(rerun, "SELECT count(*) FROM clips")[1] == [(8,)]
    assert store_cli(tmp_path, "check")[0] == 0


def test_a_later_run_of_a_marked_stage_waits_for_its_own_mark(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    store.write("clips", [clip(0)], config_hash="K", stage="egemaps")
    store.mark_stage("egemaps", "K", rows=1, seconds=0.1)
    store.write("clips", [clip(1)], config_hash="K", stage="egemaps")  # same key, a new transaction
    assert store.read("clips").num_rows == 1
    store.mark_stage("egemaps", "K", rows=1, seconds=0.1)
    assert store.read("clips").num_rows == 2


def test_commit_records_list_relative_paths_sizes_and_hashes(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    store.write("clips", [clip(0, "a"), clip(1, "b")], config_hash="k")  # two partitions, one commit
    store.write("checkpoints", [checkpoint(0)], config_hash="k")
    records = [json.loads(p.read_text()) for p in sorted(store.log.dir.glob("*.json"))]
    assert [r["seq"] for r in records] == [1, 2]
    assert len(records[0]["add"]) == 2
    for entry in (e for r in records for e in r["add"]):
        assert not entry["path"].startswith("/") and entry["path"].startswith("tables/")
        path = store.root / entry["path"]
        assert path.stat().st_size == entry["bytes"] and sha256_file(path) == entry["sha256"]
        assert pq.ParquetFile(path).metadata.num_rows == entry["rows"]
    # Partition columns live in folder names only.
    clips_file = store.root / records[0]["add"][0]["path"]
    assert clips_file.parent.name == "dataset=a" and "dataset" not in pq.read_schema(clips_file).names
    assert str(tmp_path) not in "".join(p.read_text() for p in store.log.dir.glob("*.json"))


def test_files_no_record_holds_are_never_read(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    store.write("clips", [clip(0)], config_hash="k")
    # A crashed writer's file (written, never committed), even one of another schema.
    stray = store.tables_dir / "clips" / "dataset=d" / "part-stray.parquet"
    pq.write_table(pq.read_table(next(stray.parent.glob("part-2*.parquet"))).append_column(
        "x", [[1]]), stray)
    assert store.read("clips").num_rows == 1
    code, out = store_cli(tmp_path, "check")
    assert code == 0 and "orphan" in out and "part-stray.parquet" in out
    assert store_cli(tmp_path, "repair", "--orphan-age-s", "0")[0] == 0
    assert not stray.exists()


def test_reads_keep_the_order_rows_were_written_in(tmp_path):
    # Callers hash row lists (the trainer's train set): a resumed stage must read what it wrote.
    store = FeatureStore(tmp_path / "store").init()
    order = [5, 3, 9, 1, 7, 2, 8, 0, 4, 6]
    store.write("clips", [clip(i) for i in order[:6]], config_hash="k")
    store.write("clips", [clip(i) for i in order[6:]], config_hash="k")
    assert store.read("clips").column("clip_id").to_pylist() == [f"c{i:05d}" for i in order]
