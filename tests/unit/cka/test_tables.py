"""Every CKA table's rows fit its schema, are written by the store and read back."""

from __future__ import annotations

import numpy as np

from serlens.cka import CkaArgs, CkaService
from serlens.pipeline.stages import write_tables
from serlens.shared.schema import LINEAGE_FIELDS, table
from serlens.shared.store import FeatureStore


def test_tables_round_trip_through_the_store(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([f"s{i}" for i in range(6)], 5)
    reference = rng.normal(size=(30, 4))
    cells = {(step, layer): reference @ rng.normal(size=(4, 8)) + rng.normal(size=(30, 8)) * (1 + step)
             for step in (0, 1, 2) for layer in (0, 1)}
    config = CkaArgs(permutations=49).to_config()
    factors = {"speaker": list(labels), "gender": [str(int(s[1]) % 2) for s in labels],
               "sentence": [f"t{i % 3}" for i in range(30)]}
    tables = CkaService(config=config).analyse(cells, reference, speakers=list(labels), confounds=factors,
                                               reembedded={0: cells[(0, 0)] + 1e-6})
    by_table = tables.by_table()
    assert {name: len(rows) for name, rows in by_table.items()} == {
        "cka": 12, "cka_changes": 2 * 2 * 2 * 2, "cka_drift": 2 * 3 * 2 * 2 + 2, "cka_layers": 2 * 3 * 4}
    for name, rows in by_table.items():
        expected = set(table(name).schema.names) - {"train_key"} - {f.name for f in LINEAGE_FIELDS}
        assert all(set(r) == expected for r in rows), name
    cka = by_table["cka"]
    assert all(r["permutation_scheme"] == "within_speaker" and r["permutations"] == 49 for r in cka)
    assert all(r["confounds"] == "speaker,gender,sentence" and np.isfinite(r["partial_value"]) for r in cka)
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] and 0 < r["p_value"] <= 1 for r in cka)
    store = FeatureStore(tmp_path / "store")
    count = write_tables(store, by_table, train_key="t", config_hash="h")
    assert count == sum(len(rows) for rows in by_table.values())
    back = store.read("cka_changes", filters={"baseline": "previous"}).to_pylist()
    assert len(back) == 8 and {r["train_key"] for r in back} == {"t"}


def test_two_speakers_give_permutations_but_no_intervals():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(20, 3))
    tables = CkaService(config=CkaArgs(permutations=19).to_config()).analyse(
        {(0, 0): reference @ rng.normal(size=(3, 5)), (4, 0): rng.normal(size=(20, 5))}, reference,
        speakers=["a"] * 10 + ["b"] * 10)
    assert all(r["ci_low"] is None and r["permutation_scheme"] == "within_speaker" for r in tables.cka)
    assert tables.changes == []
