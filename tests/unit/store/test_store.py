"""The feature store: newest row per key, partitions, atomic writes, filters, a locked DuckDB file."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import pytest
from support.store_rows import embedding_rows

from serlens.shared.errors import StoreError
from serlens.shared.store import FeatureStore


def _checkpoint(step: int, loss: float) -> dict:
    return {"train_key": "k", "checkpoint_step": step, "run_id": "r", "uri": "file:///x", "local_path": "/x",
            "model": "m", "epoch": 1.0, "train_loss": loss, "val_loss": loss, "val_f1_macro": 0.5}


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    return FeatureStore(tmp_path / "store").init()


def test_the_newest_row_per_key_wins(store):
    store.write("checkpoints", [_checkpoint(0, 2.0), _checkpoint(50, 1.5)], config_hash="k")
    time.sleep(0.002)
    store.write("checkpoints", [_checkpoint(50, 1.0)], config_hash="k")
    rows = store.read("checkpoints", order_by=["checkpoint_step"]).to_pylist()
    assert [(r["checkpoint_step"], r["train_loss"]) for r in rows] == [(0, 2.0), (50, 1.0)]


def test_filters_select_rows_and_unknown_columns_are_refused(store):
    store.write("checkpoints", [_checkpoint(s, 1.0) for s in (0, 50, 100)], config_hash="k")
    assert store.read("checkpoints", filters={"checkpoint_step": [0, 100]}).num_rows == 2
    assert store.read("checkpoints", filters={"checkpoint_step": []}).num_rows == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert store.read("checkpoints", created_since=later).num_rows == 0
    with pytest.raises(StoreError, match="no column"):
        store.read("checkpoints", filters={"checkpoint_step; DROP": 1})
    with pytest.raises(StoreError, match="no column"):
        store.read("checkpoints", order_by=["nope"])
    assert store.keys_present("checkpoints", ["checkpoint_step"], filters={"train_key": "k"}) == {(0,), (50,), (100,)}


def test_partitions_are_folders_and_a_partition_read_sees_only_its_own(store):
    store.write("embeddings", embedding_rows(0), config_hash="e")
    store.write("embeddings", embedding_rows(50), config_hash="e")
    folders = sorted(p.relative_to(store.tables_dir / "embeddings").parent.as_posix()
                     for p in (store.tables_dir / "embeddings").rglob("part-*.parquet") if "schema" not in p.name)
    assert folders == ["train_key=k/checkpoint_step=0", "train_key=k/checkpoint_step=50"]
    only = store.read("embeddings", partition={"train_key": "k", "checkpoint_step": 50})
    assert set(only.column("checkpoint_step").to_pylist()) == {50} and only.num_rows == 3
    with pytest.raises(StoreError, match="not a prefix"):
        store.read("embeddings", partition={"checkpoint_step": 50})


def test_writes_are_atomic_and_leave_no_temporary_files(store):
    store.write("checkpoints", [_checkpoint(0, 1.0)], config_hash="k")
    bad = [{**_checkpoint(50, 1.0), "checkpoint_step": "not a number"}]
    with pytest.raises(StoreError):
        store.write("checkpoints", bad, config_hash="k")
    files = list(store.tables_dir.rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]
    assert store.read("checkpoints").num_rows == 1


def test_an_empty_table_reads_as_its_schema(store):
    empty = store.read("cka")
    assert empty.num_rows == 0 and "value" in empty.column_names


_HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)  # a server's reader
print("held", flush=True)
time.sleep(30)
"""


def test_a_held_catalogue_blocks_nothing_and_a_moved_store_answers(store):
    store.write("checkpoints", [_checkpoint(0, 1.0)], config_hash="k")
    assert store.refresh_views() is True
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(store.db_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # A user's DuckDB client holds the catalogue: the refresh waits for no one, and
        # serlens' own readers build their views from the log, so they see the new row.
        store.write("checkpoints", [_checkpoint(50, 1.0)], config_hash="k")
        assert store.refresh_views() is False
        assert store.read("checkpoints").num_rows == 2
    finally:
        holder.kill()
        holder.wait()
    # No absolute path in the log: the moved store answers; its catalogue is rewritten for the new place.
    moved = FeatureStore(store.root.parent / "elsewhere")
    store.root.rename(moved.root)
    assert moved.read("checkpoints").num_rows == 2
    with moved.connect_readonly(sandboxed=False) as con:
        assert con.execute("SELECT count(*) FROM checkpoints").fetchone() == (2,)
    assert str(store.root) not in "".join(p.read_text() for p in moved.log.dir.glob("*.json"))


def test_views_answer_sql(store):
    store.write("checkpoints", [_checkpoint(0, 1.0), _checkpoint(50, 0.5)], config_hash="k")
    store.refresh_views()
    # Any DuckDB client: from the store folder, or from any other once file_search_path points there.
    script = ("import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
              "sys.argv[2:] and con.execute('SET file_search_path = ?', sys.argv[2:]); "
              "print(con.execute('SELECT count(*) FROM checkpoints').fetchone()[0])")
    for cwd, search_path in [(store.root, []), ("/", [str(store.root)])]:
        outside = subprocess.run([sys.executable, "-c", script, str(store.db_path), *search_path], cwd=cwd,
                                 capture_output=True, text=True, check=True)
        assert outside.stdout.strip() == "2"
