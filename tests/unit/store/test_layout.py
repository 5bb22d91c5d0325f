"""A portable, interoperable layout: the table folders read the same through DuckDB, pandas,
polars and pyarrow; a moved store answers without a rerun."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from support.store_rows import checkpoint, clip, store_cli

from serlens.shared.store import FeatureStore, run_readonly_query


def _embeddings(step: int, n: int = 3) -> pa.Table:
    return pa.table({
        "clip_id": [f"c{i}" for i in range(n)], "dataset": ["d"] * n, "audio_sha256": ["h"] * n,
        "model": ["m"] * n, "train_key": ["k/1"] * n, "checkpoint_step": pa.array([step] * n, pa.int32()),
        "layer": pa.array([0] * n, pa.int16()), "pooling": ["mean"] * n,
        "embedding": [np.ones(4, np.float32).tolist()] * n,
    })


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    store = FeatureStore(tmp_path_factory.mktemp("work") / "store").init()
    store.write("clips", [clip(0, "a"), clip(1, "b"), clip(2, "b")], config_hash="k")
    store.write("embeddings", _embeddings(0), config_hash="e")
    store.write("embeddings", _embeddings(50), config_hash="e")
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


def test_a_moved_store_answers_sql_and_its_catalogue_from_the_new_place(store, tmp_path):
    moved = FeatureStore(tmp_path / "elsewhere" / "store")
    moved.root.parent.mkdir()
    store.root.rename(moved.root)
    try:
        assert run_readonly_query(moved, "SELECT count(*) FROM embeddings")[1] == [(6,)]
        assert moved.read("clips").num_rows == 3
        with moved.connect_readonly(sandboxed=False) as con:
            assert con.execute("SELECT count(*) FROM clips").fetchone() == (3,)
        assert store_cli(tmp_path / "elsewhere", "check")[0] == 0
    finally:
        moved.root.rename(store.root)
