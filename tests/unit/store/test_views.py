"""Runs in SQL, the long eGeMAPS view and column comments, in the sandbox and the catalogue alike."""

from __future__ import annotations

import duckdb
import pytest

from serlens.egemaps.groups import feature_groups
from serlens.shared.column_docs import describe
from serlens.shared.runs import record_run
from serlens.shared.schema import egemaps_feature_names
from serlens.shared.store import FeatureStore, run_readonly_query


def _cka(value: float) -> dict:
    return {"train_key": "t", "checkpoint_step": 0, "layer": 1, "reference": "egemaps", "estimator": "linear",
            "value": value}


@pytest.fixture()
def store(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    # Two finished runs with other analysis keys, and a newer one that failed.
    store.write("cka", [_cka(0.25)], config_hash="a-old")
    store.write("cka", [_cka(0.75)], config_hash="a-new")
    record_run(store, "old", "finished", config_hash="d", data_key="d", analysis_key="a-old")
    record_run(store, "new", "finished", config_hash="d", data_key="d", analysis_key="a-new")
    record_run(store, "broken", "failed", config_hash="d", data_key="d", analysis_key="a-none")
    features = dict.fromkeys(egemaps_feature_names(), 1.0)
    store.write("egemaps", [{"clip_id": "c1", "dataset": "demo", "audio_sha256": "h", "extractor_version": "v",
                             **features}], config_hash="e")
    store.refresh_views()
    return store


def _query(store: FeatureStore, sql: str) -> list[tuple]:
    return run_readonly_query(store, sql)[1]


def test_latest_run_views_and_run_macros_never_mix_runs(store):
    assert _query(store, "SELECT run_id FROM latest_run") == [("new",)]
    assert _query(store, "SELECT value FROM latest_cka") == [(0.75,)]
    assert _query(store, "SELECT value FROM run_cka('old')") == [(0.25,)]
    assert _query(store, "SELECT count(*) FROM run_cka('broken')") == [(0,)]
    assert _query(store, "SELECT count(*) FROM cka") == [(2,)]


def test_egemaps_long_has_every_functional_once_with_its_group(store):
    rows = _query(store, "SELECT feature, parameter_group, value FROM egemaps_long WHERE clip_id = 'c1'")
    assert sorted(r[0] for r in rows) == sorted(egemaps_feature_names())
    assert {r[0]: r[1] for r in rows} == feature_groups()
    assert {r[2] for r in rows} == {1.0}


def test_every_column_has_its_comment_in_the_catalogue_and_open_store(store):
    for con in (duckdb.connect(str(store.db_path), read_only=True), store.connect_readonly(sandboxed=True)):
        comments = dict(((t, c), m) for t, c, m in con.execute(
            "SELECT table_name, column_name, comment FROM duckdb_columns()").fetchall())
        assert comments[("cka", "q_value")] == describe("cka", "q_value")
        assert comments[("latest_cka", "value")] == describe("cka", "value")
        assert comments[("clips", "subset")] == describe("clips", "subset")
        con.close()
