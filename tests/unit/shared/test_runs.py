"""A run is one row of ``runs``: running, then finished or failed; "latest" means the newest finished."""

import pytest

from serlens.shared.errors import NotFoundError
from serlens.shared.runs import finished_runs, latest_run, record_run, run_by_id
from serlens.shared.store import FeatureStore


@pytest.fixture()
def store(tmp_path):
    return FeatureStore(tmp_path / "store").init()


def test_a_run_is_one_row_that_moves_from_running_to_finished(store):
    record_run(store, "r1", "running", config_hash="d1", data_key="d1")
    assert store.read("runs").column("status").to_pylist() == ["running"]
    with pytest.raises(NotFoundError):
        latest_run(store)
    record_run(store, "r1", "finished", config_hash="d1", data_key="d1", analysis_key="a1")
    rows = store.read("runs").to_pylist()
    assert [(r["run_id"], r["status"], r["analysis_key"]) for r in rows] == [("r1", "finished", "a1")]
    assert latest_run(store)["run_id"] == "r1"


def test_a_failed_run_keeps_its_error_and_never_counts_as_latest(store):
    record_run(store, "old", "finished", config_hash="d", data_key="d")
    record_run(store, "new", "running", config_hash="d", data_key="d")
    record_run(store, "new", "failed", config_hash="d", data_key="d", summary_json='{"error": "StoreError: disk full"}')
    assert {r["run_id"]: r["status"] for r in store.read("runs").to_pylist()} == {"old": "finished", "new": "failed"}
    assert [r["run_id"] for r in finished_runs(store)] == ["old"]
    assert latest_run(store)["run_id"] == "old"
    with pytest.raises(NotFoundError, match="newest: old"):
        run_by_id(store, "new")


def test_an_unknown_status_is_refused(store):
    with pytest.raises(ValueError, match="started"):
        record_run(store, "r", "started", config_hash="d")
