"""The store's SQL views: one per table over its committed files, and the views derived from them.

Every reader of the store sees the same names, whether it is the sandbox that runs untrusted
``/sql`` and ``serlens sql`` queries (``sandbox_connection``, Arrow datasets over the files the
commit log lists) or the DuckDB catalogue file for outside clients (``catalog.write_catalogue``):

- one view per table (``clips``, ``cka``, ...): the newest row per key;
- runs in SQL: ``latest_run`` (the newest finished run, one row), and for each table that a
  run's stage key selects, a view ``latest_<table>`` (its rows of the latest run) and a table
  macro ``run_<table>(run_id)`` (its rows of any run, e.g. ``SELECT * FROM run_cka('2f0c…')``);
- ``egemaps_long``: one row per (clip, eGeMAPS functional) with its parameter group;
- a comment on every column (``serlens.shared.column_docs``) and on every view.

As-of queries filter ``created_at`` on the table views' underlying rows: every row keeps the
time it was written, and a run's rows are those its stage keys name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import psutil
import pyarrow as pa
import pyarrow.dataset as ds

from serlens.shared.column_docs import describe
from serlens.shared.schema import TableSpec, all_tables
from serlens.shared.sql import TABLES_DIR, SqlLimits, dedupe_sql, sql_literal

#: Which column of ``runs`` holds the stage key that a table's ``config_hash`` carries.
RUN_SCOPE: dict[str, str] = {
    "clips": "data_key", "skipped": "data_key", "egemaps": "egemaps_key", "checkpoints": "train_key",
    "train_metrics": "train_key", "embeddings": "embed_hash", "cka": "analysis_key", "cka_changes": "analysis_key",
    "cka_drift": "analysis_key", "cka_layers": "analysis_key", "probes": "analysis_key",
    "probe_features": "analysis_key", "probe_classes": "analysis_key", "probe_confusion": "analysis_key",
}


def _egemaps_long() -> str:
    from serlens.egemaps.groups import feature_groups

    lineage = ("clip_id", "dataset", "audio_sha256", "extractor_version", "config_hash", "created_at")
    groups = ", ".join(f"({sql_literal(name)}, {sql_literal(group)})" for name, group in feature_groups().items())
    kept = ", ".join(f"u.{c}" for c in lineage)
    return (f"SELECT {kept}, u.feature, g.parameter_group, u.value FROM "
            f"(UNPIVOT egemaps ON COLUMNS(* EXCLUDE ({', '.join(lineage)})) INTO NAME feature VALUE value) AS u "
            f"JOIN (VALUES {groups}) AS g(feature, parameter_group) USING (feature)")


def derived_statements(*, comments: bool = True) -> list[str]:
    """The SQL that creates the derived views and macros (and the comments) over the table views."""
    out = ["CREATE OR REPLACE VIEW latest_run AS SELECT * FROM runs WHERE status = 'finished' "
           "ORDER BY created_at DESC LIMIT 1"]
    for table, key in RUN_SCOPE.items():
        out.append(f'CREATE OR REPLACE VIEW "latest_{table}" AS SELECT t.* FROM "{table}" AS t '
                   f'WHERE t.config_hash = (SELECT "{key}" FROM latest_run)')
        out.append(f'CREATE OR REPLACE MACRO "run_{table}"(rid) AS TABLE SELECT t.* FROM "{table}" AS t '
                   f'WHERE t.config_hash = (SELECT "{key}" FROM runs WHERE run_id = rid)')
    out.append(f"CREATE OR REPLACE VIEW egemaps_long AS {_egemaps_long()}")
    if not comments:
        return out
    out.append("COMMENT ON VIEW latest_run IS 'the newest finished run (one row)'")
    out.append("COMMENT ON VIEW egemaps_long IS 'eGeMAPS in long format: one row per (clip, functional), "
               "with its parameter group (Eyben et al. 2016)'")
    for spec in all_tables():
        if spec.description:
            out.append(f'COMMENT ON VIEW "{spec.name}" IS {sql_literal(spec.description)}')
        for table in (spec.name, f"latest_{spec.name}") if spec.name in RUN_SCOPE else (spec.name,):
            out.extend(f'COMMENT ON COLUMN "{table}"."{f.name}" IS {sql_literal(describe(spec.name, f.name) or "")}'
                       for f in spec.schema)
        if spec.name in RUN_SCOPE:
            out.append(f'COMMENT ON VIEW "latest_{spec.name}" IS {sql_literal(f"{spec.name} of the latest run")}')
    return out


def table_dataset(spec: TableSpec, root: Path, paths: Sequence[str]) -> ds.Dataset | pa.Table:
    """A table's committed files as one Arrow dataset, partition columns from the folder names.

    Args:
        spec: the table.
        root: the store's root.
        paths: its files, relative to ``root`` (from the commit log; never a glob).
    """
    if not paths:
        return spec.schema.empty_table()
    partitioning = None
    if spec.partition_by:
        partitioning = ds.partitioning(pa.schema([spec.schema.field(c) for c in spec.partition_by]), flavor="hive")
    return ds.dataset([str(root / p) for p in paths], schema=spec.schema, format="parquet",
                      partitioning=partitioning, partition_base_dir=str(root / TABLES_DIR / spec.name))


def sandbox_connection(root: Path, sources: Mapping[str, Sequence[str]], limits: SqlLimits,
                       spill_dir: str, *, damaged: Mapping[str, str] | None = None,
                       arrays: Mapping[str, str] | None = None,
                       comments: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per table and no access to any file.

    Args:
        root: the store's root.
        sources: each table's committed files, relative to ``root`` (tables left out are empty).
        limits: memory, threads and spill limits.
        spill_dir: an empty private folder for DuckDB's spill files.
        damaged: ``{table: error}`` for tables with a damaged file: their view raises the error.
        arrays: ``{table: ARRAY type}`` its array column is cast to (``FeatureStore.sources``).
        comments: also comment every view and column (what ``duckdb_columns()`` shows).
    """
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("SET enable_progress_bar = false")
    for spec in all_tables():
        if damaged and spec.name in damaged:
            message = sql_literal(f"table {spec.name} has a damaged file ({damaged[spec.name]})")
            # The table's columns, and an error whenever any query reads it (derived views bind to it).
            con.register(f"__parts_{spec.name}", spec.schema.empty_table())
            con.execute(f"CREATE VIEW \"{spec.name}\" AS SELECT p.* FROM (SELECT error({message}) AS e) AS boom "
                        f"LEFT JOIN \"__parts_{spec.name}\" AS p ON true WHERE boom.e IS NULL")
            continue
        con.register(f"__parts_{spec.name}", table_dataset(spec, root, sources.get(spec.name, ())))
        view = dedupe_sql(spec, f"__parts_{spec.name}", array=(arrays or {}).get(spec.name))
        con.execute(f'CREATE VIEW "{spec.name}" AS {view}')
    for statement in derived_statements(comments=comments):
        con.execute(statement)
    # DuckDB's buffer manager gets 60 % of what the process has left of its budget (Python,
    # Arrow and the result need the rest), so it spills or fails before the parent kills it.
    left_mb = limits.memory_mb - psutil.Process().memory_info().rss / 2**20
    con.execute(f"SET memory_limit = '{max(32, int(left_mb * 0.6))}MiB'")
    con.execute(f"SET threads = {int(limits.threads)}")
    con.execute("SET temp_directory = ?", [spill_dir])
    con.execute(f"SET max_temp_directory_size = '{int(limits.spill_mb)}MiB'")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con
