"""Which run is meant: the one meaning of "the latest run" that the report, CLI and API share.

A run is one row of the ``runs`` table: written ``running`` when it starts and replaced (the
newest row per ``run_id`` wins) by ``finished``, with every stage key, or ``failed``, with the
error. "The latest run" is the newest run whose status is ``finished`` (a run that died midway
never counts); its keys select the rows of every other table that belong to it.
"""

from __future__ import annotations

from typing import Any

from serlens.shared.errors import NotFoundError
from serlens.shared.schema import RUNS
from serlens.shared.store import FeatureStore

#: The states a run's row goes through.
RUN_STATUSES = ("running", "finished", "failed")


def record_run(store: FeatureStore, run_id: str, status: str, *, config_hash: str, **fields: Any) -> None:
    """Write the run's row in its new state (``running``, ``finished`` or ``failed``).

    Args:
        store: the feature store.
        run_id: the run.
        status: its state now.
        config_hash: lineage of the row (the run's data key).
        fields: the other columns of ``runs`` (the same on every write: the row replaces the last).
    """
    if status not in RUN_STATUSES:
        raise ValueError(f"run status {status!r}; expected one of {RUN_STATUSES}")
    store.write(RUNS.name, [{"run_id": run_id, "status": status, **fields}], config_hash=config_hash)


def finished_runs(store: FeatureStore) -> list[dict[str, Any]]:
    """Every finished run, oldest first."""
    return store.read(RUNS.name, filters={"status": "finished"}, order_by=["created_at"]).to_pylist()


def latest_run(store: FeatureStore) -> dict[str, Any]:
    """The newest finished run's row.

    Raises:
        NotFoundError: when the store holds no finished run.
    """
    runs = finished_runs(store)
    if not runs:
        raise NotFoundError(f"no finished run in {store.root}; run `serlens run` first")
    return runs[-1]


def run_by_id(store: FeatureStore, run_id: str) -> dict[str, Any]:
    """One finished run's row.

    Raises:
        NotFoundError: no finished run has that id (the message lists the newest ones).
    """
    runs = finished_runs(store)
    for run in runs:
        if run["run_id"] == run_id:
            return run
    newest = ", ".join(r["run_id"] for r in runs[-5:]) or "none"
    raise NotFoundError(f"no finished run {run_id!r} in {store.root} (newest: {newest})")
