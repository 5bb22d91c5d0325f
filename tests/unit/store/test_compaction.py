"""Compaction: small files merge in one commit; readers never see duplicates or gaps."""

from __future__ import annotations

import threading

import duckdb
import pytest
from support.store_rows import clip, store_cli

from serlens.shared.schema import CLIPS
from serlens.shared.store import FeatureStore, feature_store, run_readonly_query
from serlens.shared.store.views import table_dataset


def _raw_rows(store: FeatureStore) -> int:
    """Rows in the committed files, before newest-per-key: a duplicate file would show here."""
    sources, _, _ = store.sources()
    with duckdb.connect() as con:
        con.register("t", table_dataset(CLIPS, store.root, sources["clips"]))
        return con.execute("SELECT count(*) FROM t").fetchone()[0]


def test_writes_past_the_threshold_compact_themselves(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    for i in range(2 * feature_store.AUTO_COMPACT_FILES + 5):
        store.write("clips", [clip(i)], config_hash="k")
    assert len(store.committed_files("clips")) <= feature_store.AUTO_COMPACT_FILES
    assert store.read("clips").num_rows == _raw_rows(store) == 2 * feature_store.AUTO_COMPACT_FILES + 5


def test_readers_see_every_row_once_while_compaction_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_store, "AUTO_COMPACT_FILES", 10_000)
    store = FeatureStore(tmp_path / "store").init()
    rows = 60
    for i in range(rows):
        store.write("clips", [clip(i, dataset=f"d{i % 2}")], config_hash="k")
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def read_loop() -> None:
        reader = FeatureStore(store.root)
        while not stop.is_set():
            seen.append((reader.read("clips").num_rows, _raw_rows(reader)))

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        code, out = store_cli(tmp_path, "compact")
    finally:
        stop.set()
        thread.join()
    assert code == 0 and "clips: 60 -> 2 file(s)" in out
    assert seen and all(s == (rows, rows) for s in seen), sorted(set(seen))
    assert run_readonly_query(store, "SELECT count(*) FROM clips")[1] == [(rows,)]
    # Retired files wait out the grace period (a reader may have listed them), then go.
    on_disk = lambda: len(list(store.tables_dir.joinpath("clips").rglob("*.parquet")))  # noqa: E731
    assert on_disk() == rows + 2
    assert store_cli(tmp_path, "check")[0] == 0
    store_cli(tmp_path, "repair", "--orphan-age-s", "0")
    assert on_disk() == 2 and store.read("clips").num_rows == rows


@pytest.mark.slow
def test_two_thousand_single_clip_writes_keep_sql_fast(tmp_path):
    import time

    store = FeatureStore(tmp_path / "store").init()

    def timed_count() -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            assert run_readonly_query(store, "SELECT count(*) FROM clips")[1][0][0] > 0
            best = min(best, time.perf_counter() - started)
        return best

    for i in range(10):
        store.write("clips", [clip(i)], config_hash="k")
    at_ten = timed_count()
    for i in range(10, 2000):
        store.write("clips", [clip(i)], config_hash="k")
    assert len(store.committed_files("clips")) <= feature_store.AUTO_COMPACT_FILES
    assert timed_count() < 2 * at_ten + 0.05
