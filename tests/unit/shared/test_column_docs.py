"""Every column of the store has a written meaning, and nothing written down names a missing column."""

import pytest

from serlens.shared.column_docs import COMMON, TABLES, describe, schema_listing
from serlens.shared.errors import NotFoundError
from serlens.shared.schema import all_tables


def test_every_column_is_described() -> None:
    missing = [f"{t.name}.{f.name}" for t in all_tables() for f in t.schema if not describe(t.name, f.name)]
    assert missing == []


def test_no_description_names_a_missing_table_or_column() -> None:
    columns = {t.name: set(t.schema.names) for t in all_tables()}
    stale = [f"{name}.{col}" for name, docs in TABLES.items() for col in docs if col not in columns.get(name, set())]
    assert stale == []
    everywhere = set().union(*columns.values())
    assert sorted(set(COMMON) - everywhere) == []


def test_table_specific_text_wins_over_the_common_one() -> None:
    assert describe("cka_layers", "value") == TABLES["cka_layers"]["value"]
    assert describe("cka", "value") == COMMON["value"]
    assert "parameter group" in (describe("egemaps", "loudness_sma3_amean") or "")
    assert describe("clips", "no_such_column") is None


def test_the_listing_gives_every_table_and_names_an_unknown_one() -> None:
    listing = schema_listing()
    assert [t["table"] for t in listing] == [t.name for t in all_tables()]
    (cka,) = schema_listing("cka")
    value = next(c for c in cka["columns"] if c["name"] == "value")
    assert value == {"name": "value", "type": "double", "nullable": True, "description": COMMON["value"]}
    with pytest.raises(NotFoundError, match="tables: clips, egemaps"):
        schema_listing("nope")
