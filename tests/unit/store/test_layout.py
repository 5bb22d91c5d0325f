"""A portable, interoperable layout: the table folders read the same through DuckDB, pandas,
polars and pyarrow; a moved store answers without a rerun."""

from __future__ import annotations

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from support.store_rows import checkpoint, clip, embedding_rows, store_cli

from serlens.shared.store import FeatureStore, run_readonly_query


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    store = FeatureStore(tmp_path_factory.mktemp("work") / "store").init()
    store.write("clips", [clip(0, "a"), clip(1, "b"), clip(2, "b")], config_hash="k")
    store.write("embeddings", embedding_rows(0, train_key="k/1"), config_hash="e")
    store.write("embeddings", embedding_rows(50, train_key="k/1"), config_hash="e")
    store.write("checkpoints", [checkpoint(0), checkpoint(50)], config_hash="k")
    store.refresh_views()
    return store


COLUMNS = {"clips": ["clip_id", "dataset", "speaker"], "embeddings": ["clip_id", "train_key", "checkpoint_step"],
           "checkpoints": ["train_key", "checkpoint_step", "train_loss"]}


def _rows(frame: pd.DataFrame, name: str) -> list[tuple]:
    cols = COLUMNS[name]
    return sorted(tuple(str(v) for v in row) for row in frame[cols].itertuples(index=False))


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_table_folders_read_the_same_through_duckdb_pandas_polars_and_pyarrow(store, name):
    folder = store.tables_dir / name
    expected = _rows(store.read(name).to_pandas(), name)
    hive = name != "checkpoints"
    with duckdb.connect() as con:
        through_duckdb = con.execute(
            f"SELECT * FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = {str(hive).lower()})").df()
    readers = {
        "duckdb": through_duckdb,
        "pandas": pd.read_parquet(folder),
        "polars": pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=hive).collect().to_pandas(),
        "pyarrow": ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas(),
    }
    for reader, frame in readers.items():
        assert _rows(frame, name) == expected, reader


def test_embeddings_are_fixed_size_arrays_for_every_reader(store):
    folder = store.tables_dir / "embeddings"
    assert ds.dataset(folder, format="parquet", partitioning="hive").schema.field("embedding").type == \
        pa.list_(pa.float32(), 4)
    assert pl.scan_parquet(f"{folder}/**/*.parquet").collect_schema()["embedding"] == pl.Array(pl.Float32, 4)
    assert pd.read_parquet(folder)["embedding"].iloc[0].shape == (4,)
    similar = "SELECT typeof(embedding), array_cosine_similarity(embedding, embedding) FROM embeddings LIMIT 1"
    with store.connect_readonly(sandboxed=False) as con:  # the DuckDB file
        assert con.execute(similar).fetchone() == ("FLOAT[4]", pytest.approx(1.0))
    assert run_readonly_query(store, similar)[1] == [("FLOAT[4]", pytest.approx(1.0))]  # the /sql sandbox
    assert store.read("embeddings").column("embedding").to_pylist()[0] == [1.0] * 4


def test_vectors_of_different_lengths_stay_lists(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    store.write("embeddings", embedding_rows(0, train_key="small"), config_hash="e")
    wide = embedding_rows(0, train_key="wide")
    wide = wide.set_column(wide.schema.get_field_index("embedding"), "embedding",
                           pa.array([[0.5] * 8] * wide.num_rows, pa.list_(pa.float32())))
    store.write("embeddings", wide, config_hash="e")
    store.refresh_views()
    query = "SELECT typeof(embedding), len(embedding) FROM embeddings ORDER BY 2"
    assert run_readonly_query(store, query)[1] == [("FLOAT[]", 4)] * 3 + [("FLOAT[]", 8)] * 3
    with store.connect_readonly(sandboxed=False) as con:
        assert con.execute(query).fetchall() == [("FLOAT[]", 4)] * 3 + [("FLOAT[]", 8)] * 3
    assert store_cli(tmp_path, "check")[0] == 0


def test_a_moved_store_answers_sql_and_its_catalogue_from_the_new_place(store, tmp_path, monkeypatch):
    old_root = str(store.root)
    moved = FeatureStore(tmp_path / "elsewhere" / "store")
    moved.root.parent.mkdir()
    store.root.rename(moved.root)
    try:
        assert run_readonly_query(moved, "SELECT count(*) FROM embeddings")[1] == [(6,)]
        assert moved.read("clips").num_rows == 3
        # An outside client reads the moved catalogue as it is, with no rewrite: from the store
        # folder, or from anywhere once file_search_path points there.
        with duckdb.connect(str(moved.db_path), read_only=True) as con:
            listed = con.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()
            views = " ".join(sql for (sql,) in listed)
            assert "tables/clips/" in views and old_root not in views and str(moved.root) not in views
            con.execute("SET file_search_path = ?", [str(moved.root)])
            assert con.execute("SELECT count(*) FROM clips").fetchone() == (3,)
        monkeypatch.chdir(moved.root)
        with duckdb.connect("serlens.duckdb", read_only=True) as con:
            assert con.execute("SELECT count(*) FROM embeddings").fetchone() == (6,)
        assert store_cli(tmp_path / "elsewhere", "check")[0] == 0
    finally:
        moved.root.rename(store.root)


def test_compaction_keeps_the_vectors_fixed_size(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    for k in range(3):
        rows = embedding_rows(0)
        store.write("embeddings", rows.set_column(0, "clip_id", pa.array([f"x{k}{i}" for i in range(3)])),
                    config_hash="e")
    assert store_cli(tmp_path, "compact")[0] == 0
    files = store.log.snapshot().visible("embeddings")
    assert [f.array_size for f in files] == [4]
    assert run_readonly_query(store, "SELECT typeof(embedding), count(*) FROM embeddings GROUP BY 1")[1] == [
        ("FLOAT[4]", 9)]
    assert store_cli(tmp_path, "check")[0] == 0
