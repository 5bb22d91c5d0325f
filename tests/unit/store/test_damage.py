"""Damage contained: bad files are found, quarantined, named; repair drops them; a full disk."""

from __future__ import annotations

import os
import subprocess
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.store_rows import checkpoint, clip, store_cli

from serlens.shared.errors import StoreError
from serlens.shared.store import FeatureStore, run_readonly_query


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    store = FeatureStore(tmp_path / "store").init()
    store.write("clips", [clip(i) for i in range(4)], config_hash="K", stage="prepare")
    store.mark_stage("prepare", "K", rows=4, seconds=1.0)
    store.write("clips", [clip(9, "other")], config_hash="u")  # an upload, in another partition
    store.write("checkpoints", [checkpoint(0)], config_hash="k")
    return store


def _stage_file(store: FeatureStore):
    return next((store.tables_dir / "clips" / "dataset=d").glob("part-*.parquet"))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _flip(path):  # same size, other bytes in the middle (a bad sector, a stray write)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid: mid + 16] = bytes(16)
    path.write_bytes(bytes(data))


def _retype(path):  # a well-formed Parquet file whose columns have other types
    tbl = pq.read_table(path)
    pq.write_table(tbl.set_column(tbl.schema.get_field_index("subset"), "subset",
                                  pa.array(["x"] * tbl.num_rows)), path)


@pytest.mark.parametrize("harm", [_truncate, _empty, _flip, _retype])
def test_a_damaged_file_is_named_quarantined_and_repaired(store, tmp_path, harm):
    bad = _stage_file(store)
    relative = bad.relative_to(store.root).as_posix()
    harm(bad)
    code, out = store_cli(tmp_path, "check")
    assert code == 2 and relative in out
    if harm is not _flip:  # size or footer differ: a read finds it before anything runs
        with pytest.raises(StoreError, match=relative.replace(".", r"\.")):
            store.read("clips")
        assert (store.root / "_quarantine" / relative).exists() and not bad.exists()
    assert store.read("checkpoints").num_rows == 1  # other tables stay readable
    assert run_readonly_query(store, "SELECT count(*) FROM checkpoints")[1] == [(1,)]
    code, out = store_cli(tmp_path, "repair")
    assert code == 0 and "quarantined: 1" in out and "prepare/K" in out
    # Its rows and its stage's mark are gone, so the rerun recomputes them.
    assert store.read("clips").column("clip_id").to_pylist() == ["c00009"]
    assert not store.stage_done("prepare", "K")
    store.write("clips", [clip(i) for i in range(4)], config_hash="K", stage="prepare")
    store.mark_stage("prepare", "K", rows=4, seconds=1.0)
    assert store.read("clips").num_rows == 5
    assert store_cli(tmp_path, "check")[0] == 0


def test_a_damaged_commit_record_is_named(store, tmp_path):
    store.log.record_path(2).write_text("{not json")
    with pytest.raises(StoreError, match="000000000002.json"):
        store.read("clips")


def test_a_store_of_the_previous_layout_is_migrated_by_repair(tmp_path):
    root = tmp_path / "store"
    folder = root / "tables" / "clips" / "dataset=d"
    folder.mkdir(parents=True)
    from serlens.shared.schema import CLIPS
    from serlens.shared.store.tables import to_table

    # As the old store wrote them: a schema marker per table, partition columns inside files.
    pq.write_table(CLIPS.schema.empty_table(), root / "tables" / "clips" / "part-00000000-schema-v9.parquet")
    pq.write_table(to_table(CLIPS, [clip(0), clip(1)], "old"), folder / "part-20250101T000000000000-abc.parquet")
    code, out = store_cli(tmp_path, "check")
    assert code == 2 and "previous layout" in out
    with pytest.raises(StoreError, match="previous layout"):
        FeatureStore(root).write("clips", [clip(2)], config_hash="k")
    assert store_cli(tmp_path, "repair")[0] == 0
    store = FeatureStore(root)
    rows = store.read("clips").to_pylist()
    assert sorted(r["clip_id"] for r in rows) == ["c00000", "c00001"] and rows[0]["config_hash"] == "old"
    assert store_cli(tmp_path, "check")[0] == 0
    assert not list((root / "tables").rglob("part-2025*")) and not list((root / "tables").rglob("*schema*"))


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs); skipped where this process may not mount one."""
    mount = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_store_error_and_leaves_nothing_half_written(small_disk):
    store = FeatureStore(small_disk / "store").init()
    noise = os.urandom(200_000).hex()  # incompressible: each write is ~400 kB
    written = 0
    with pytest.raises(StoreError, match="no space left"):
        for i in range(100):
            store.write("skipped", [{"item": f"i{i}", "stage": "prepare", "reason": noise}], config_hash="k")
            written += 1
    assert 0 < written < 100
    assert store.read("skipped").num_rows == written
    leftovers = [p for p in small_disk.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert not leftovers
    code, out = store_cli(small_disk, "check")
    assert code == 0 and "0 orphan(s)" in out, out
