"""The feature store: Parquet under one root, SQL views over it in one DuckDB file.

This is the only module that writes Parquet or opens DuckDB.

Layout::

    <root>/tables/<table>/[<col>=<value>/...]part-<utc>-<uuid>.parquet
    <root>/serlens.duckdb        views over the Parquet, one per table

Rules that keep the store consistent under concurrency and crashes:

- every file is written under a temporary name in its final folder and renamed into
  place, so a reader (or a killed writer) never sees half a file;
- file names are unique (time + uuid), so any number of Ray workers write at once;
- the DuckDB file holds only views (globs over the Parquet): it is written by one
  process, the driver, once per schema version; readers open it read-only, and new
  Parquet files show up in the views without touching it;
- each view keeps the newest row per key (``TableSpec.keys``), so a stage that is run
  again, or resumed after a crash, never shows duplicates.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from serlens.shared.errors import QueryRejectedError, StoreError
from serlens.shared.schema import SCHEMA_VERSION, STAGES, TableSpec, all_tables, table
from serlens.shared.sql import SqlLimits, check_query, dedupe_sql, run_in_sandbox, sandbox_connection

DB_FILENAME = "serlens.duckdb"
_SCHEMA_FILE = f"part-00000000-schema-v{SCHEMA_VERSION}.parquet"
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def utc_now() -> dt.datetime:
    """The current time, UTC, microsecond precision (the ``created_at`` of new rows)."""
    return dt.datetime.now(dt.UTC)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _partition_dir(spec: TableSpec, partition: Mapping[str, Any]) -> str:
    missing = [c for c in spec.partition_by if c not in partition]
    if missing:
        raise StoreError(f"table {spec.name!r} is partitioned by {spec.partition_by}; missing {missing}")
    return "/".join(f"{c}={quote(str(partition[c]), safe='')}" for c in spec.partition_by)


def _check_columns(spec: TableSpec, names: Sequence[str]) -> None:
    unknown = sorted(set(names) - set(spec.schema.names))
    if unknown:
        raise StoreError(f"table {spec.name!r} has no column(s) {', '.join(unknown)}")


def _conditions(filters: Mapping[str, Any], created_since: dt.datetime | None) -> tuple[str, list[Any]]:
    """An SQL condition and its parameters from equality filters (columns checked by the caller)."""
    parts: list[str] = []
    params: list[Any] = []
    for column, value in filters.items():
        if isinstance(value, (list, tuple)):
            parts.append(f'"{column}" IN ({", ".join("?" * len(value))})' if value else "FALSE")
            params.extend(value)
        else:
            parts.append(f'"{column}" = ?')
            params.append(value)
    if created_since is not None:
        parts.append('"created_at" >= ?')
        params.append(created_since)
    return " AND ".join(parts), params


class FeatureStore:
    """Parquet tables under ``root`` and the DuckDB views over them.

    Args:
        root: the store's folder; created if missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.tables_dir = self.root / "tables"
        self.db_path = self.root / DB_FILENAME

    # ------------------------------------------------------------------ layout

    def init(self) -> FeatureStore:
        """Create the folders and one empty, typed file per table (so every view resolves)."""
        for spec in all_tables():
            folder = self.tables_dir / spec.name
            folder.mkdir(parents=True, exist_ok=True)
            marker = folder / _SCHEMA_FILE
            if not marker.exists():
                self._atomic_write(spec.schema.empty_table(), marker)
        return self

    def table_glob(self, name: str) -> str:
        """The glob that matches every Parquet file of a table."""
        return str(self.tables_dir / name / "**" / "*.parquet")

    def view_sql(self, spec: TableSpec, *, partition: Mapping[str, Any] | None = None) -> str:
        """The SELECT behind a table's view: every file, newest row per key.

        Args:
            spec: the table.
            partition: leading partition values to narrow the files read (a fast path for
                readers that know them, e.g. one checkpoint's embeddings).
        """
        glob = self.table_glob(spec.name)
        if partition:
            if set(partition) != set(spec.partition_by[: len(partition)]):
                raise StoreError(
                    f"table {spec.name!r}: partition {sorted(partition)} is not a prefix of {spec.partition_by}"
                )
            lead = {c: partition[c] for c in spec.partition_by[: len(partition)]}
            folder = "/".join(f"{c}={quote(str(v), safe='')}" for c, v in lead.items())
            glob = str(self.tables_dir / spec.name / folder / "**" / "*.parquet")
        source = f"read_parquet({_sql_string(glob)}, union_by_name = true, hive_partitioning = false)"
        return dedupe_sql(spec, source)

    # ------------------------------------------------------------------ writing

    @staticmethod
    def _atomic_write(tbl: pa.Table, final: Path) -> None:
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(tbl, tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()

    def write(
        self,
        name: str,
        rows: pa.Table | Sequence[Mapping[str, Any]],
        *,
        config_hash: str,
    ) -> Path | None:
        """Append rows to a table as one new Parquet file per partition.

        Args:
            name: table name (see ``serlens.shared.schema``).
            rows: a pyarrow table or a list of dicts with the table's columns;
                ``config_hash`` and ``created_at`` are filled in when absent.
            config_hash: lineage: the hash of the config (or stage key) that made the rows.

        Returns:
            The path of the last file written, or None when ``rows`` is empty.

        Raises:
            StoreError: when the rows do not fit the table's schema.
        """
        spec = table(name)
        tbl = self._to_table(spec, rows, config_hash)
        if tbl.num_rows == 0:
            return None
        if not spec.partition_by:
            groups: Iterable[tuple[dict[str, Any], pa.Table]] = [({}, tbl)]
        else:
            groups = self._split_partitions(spec, tbl)
        written = None
        for partition, part in groups:
            folder = self.tables_dir / spec.name
            if spec.partition_by:
                folder = folder / _partition_dir(spec, partition)
            folder.mkdir(parents=True, exist_ok=True)
            stamp = utc_now().strftime("%Y%m%dT%H%M%S%f")
            written = folder / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
            self._atomic_write(part, written)
        return written

    @staticmethod
    def _to_table(spec: TableSpec, rows: pa.Table | Sequence[Mapping[str, Any]], config_hash: str) -> pa.Table:
        now = utc_now()
        if isinstance(rows, pa.Table):
            tbl = rows
            n = tbl.num_rows
            if "config_hash" not in tbl.column_names:
                tbl = tbl.append_column("config_hash", pa.array([config_hash] * n, pa.string()))
            if "created_at" not in tbl.column_names:
                tbl = tbl.append_column("created_at", pa.array([now] * n, pa.timestamp("us", tz="UTC")))
        else:
            records = [{"config_hash": config_hash, "created_at": now, **dict(r)} for r in rows]
            unknown = {k for r in records for k in r} - set(spec.schema.names)
            if unknown:
                raise StoreError(f"table {spec.name!r} has no column(s) {sorted(unknown)}")
            try:
                tbl = pa.Table.from_pylist(records, schema=spec.schema) if records else spec.schema.empty_table()
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
                raise StoreError(f"rows do not fit table {spec.name!r}: {err}") from err
        extra = set(tbl.column_names) - set(spec.schema.names)
        missing = [f.name for f in spec.schema if f.name not in tbl.column_names and not f.nullable]
        if extra or missing:
            raise StoreError(f"table {spec.name!r}: unexpected columns {sorted(extra)}, missing {missing}")
        for f in spec.schema:
            if f.name not in tbl.column_names:
                tbl = tbl.append_column(f.name, pa.nulls(tbl.num_rows, f.type))
        try:
            return tbl.select(spec.schema.names).cast(spec.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
            raise StoreError(f"rows do not fit table {spec.name!r}: {err}") from err

    @staticmethod
    def _split_partitions(spec: TableSpec, tbl: pa.Table) -> list[tuple[dict[str, Any], pa.Table]]:
        keys = tbl.select(list(spec.partition_by)).to_pylist()
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(tuple(k[c] for c in spec.partition_by), []).append(i)
        return [
            (dict(zip(spec.partition_by, key, strict=True)), tbl.take(pa.array(idx, pa.int64())))
            for key, idx in groups.items()
        ]

    # ------------------------------------------------------------------ reading

    def read(
        self,
        name: str,
        *,
        filters: Mapping[str, Any] | None = None,
        created_since: dt.datetime | None = None,
        columns: Sequence[str] | None = None,
        order_by: Sequence[str] | None = None,
        partition: Mapping[str, Any] | None = None,
    ) -> pa.Table:
        """Read a table's view (newest row per key) into Arrow.

        Runs on a private in-memory DuckDB over the Parquet files, so any process (a Ray
        worker, the driver, a serving replica) may read at any time without locking.

        Args:
            name: table name.
            filters: ``{column: value}``, all of which must hold; a list or tuple value means
                any of its values.
            created_since: keep only rows written at or after this UTC time.
            columns: columns to return (default: all).
            order_by: columns to sort by.
            partition: leading partition values; only those folders are read.

        Raises:
            StoreError: a column that the table does not have.
        """
        spec = table(name)
        _check_columns(spec, [*(columns or ()), *(filters or {}), *(order_by or ())])
        cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
        sql = f"SELECT {cols} FROM ({self.view_sql(spec, partition=partition)})"
        where, params = _conditions(filters or {}, created_since)
        if where:
            sql += f" WHERE {where}"
        if order_by:
            sql += " ORDER BY " + ", ".join(f'"{c}"' for c in order_by)
        folder = self.tables_dir / name
        if partition:
            folder = folder / "/".join(f"{c}={quote(str(v), safe='')}" for c, v in partition.items())
        if not folder.exists() or not any(folder.rglob("*.parquet")):
            return spec.schema.empty_table().select(list(columns) if columns else spec.schema.names)
        with duckdb.connect() as con:
            return con.sql(sql, params=params).to_arrow_table()

    def keys_present(self, name: str, columns: Sequence[str], *, filters: Mapping[str, Any] | None = None,
                     partition: Mapping[str, Any] | None = None) -> set[tuple[Any, ...]]:
        """The distinct tuples of ``columns`` already stored (to skip work done before)."""
        rows = self.read(name, columns=columns, filters=filters, partition=partition)
        return set(zip(*(rows.column(c).to_pylist() for c in columns), strict=True)) if rows.num_rows else set()

    # ------------------------------------------------------------------ stages

    def stage_done(self, stage: str, stage_key: str) -> bool:
        """Whether a stage finished before with exactly this key (its inputs and config)."""
        return bool(self.keys_present(STAGES.name, ["stage"], filters={"stage": stage, "stage_key": stage_key}))

    def mark_stage(self, stage: str, stage_key: str, *, rows: int, seconds: float,
                   nodes: Mapping[str, int] | None = None) -> None:
        """Record that a stage finished; written last, after all of its rows.

        Args:
            stage: the stage's name.
            stage_key: its key.
            rows: rows it wrote.
            seconds: how long it took.
            nodes: items processed per Ray node id, for stages that fan out over the cluster.
        """
        self.write(STAGES.name, [{"stage": stage, "stage_key": stage_key, "rows": rows, "seconds": seconds,
                                  "nodes_json": json.dumps(dict(nodes)) if nodes else None}], config_hash=stage_key)

    # ------------------------------------------------------------------ DuckDB file

    def refresh_views(self) -> bool:
        """Create or replace the views in the DuckDB file (the driver calls this; nobody else).

        Returns:
            False when another process holds the file (for instance a running server with it
            open read-only) and the views there are already current; True when written.

        Raises:
            StoreError: when the file is locked and its views are missing or out of date.
        """
        self.init()
        try:
            con = duckdb.connect(str(self.db_path))
        except duckdb.IOException as err:
            if self._views_current():
                return False
            raise StoreError(f"cannot write views into {self.db_path}: {err}") from err
        try:
            for spec in all_tables():
                con.execute(f'CREATE OR REPLACE VIEW "{spec.name}" AS {self.view_sql(spec)}')
                if spec.description:
                    con.execute(f'COMMENT ON VIEW "{spec.name}" IS {_sql_string(spec.description)}')
            con.execute("CREATE OR REPLACE TABLE serlens_meta AS SELECT ? AS schema_version, ? AS root",
                        [SCHEMA_VERSION, str(self.root)])
            con.execute("CHECKPOINT")
        finally:
            con.close()
        return True

    def _views_current(self) -> bool:
        try:
            with duckdb.connect(str(self.db_path), read_only=True) as con:
                meta = con.execute("SELECT schema_version, root FROM serlens_meta").fetchone()
                views = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
                names = {r[0] for r in views}
        except duckdb.Error:
            return False
        if meta is None:
            return False
        version, root = meta
        return version == SCHEMA_VERSION and root == str(self.root) and names >= {t.name for t in all_tables()}

    def connect_readonly(self, *, sandboxed: bool = True,
                         limits: SqlLimits | None = None) -> duckdb.DuckDBPyConnection:
        """Open the store's views read-only.

        Args:
            sandboxed: an in-memory DuckDB whose views read the Parquet through Arrow and
                which can touch no file at all (external access off, configuration locked),
                for untrusted SQL; False: the DuckDB file, opened read-only.
            limits: memory, threads and spill limits of the sandbox (default ``SqlLimits()``);
                it spills into a fresh temporary folder.

        Raises:
            StoreError: when the store has no DuckDB file (or no tables) yet.
        """
        if not self.db_path.exists() or not self.tables_dir.is_dir():
            raise StoreError(f"no feature store at {self.root} (no {DB_FILENAME}); run `serlens run` first")
        if sandboxed:
            limits = limits or SqlLimits()
            return sandbox_connection(self.tables_dir, limits, tempfile.mkdtemp(prefix="serlens-sql-",
                                                                                 dir=limits.temp_dir))
        return duckdb.connect(str(self.db_path), read_only=True)


def run_readonly_query(
    store: FeatureStore,
    query: str,
    *,
    limits: SqlLimits | None = None,
) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """Run one untrusted SELECT against the store's views, sandboxed (``serlens.shared.sql``).

    Args:
        store: the feature store.
        query: the caller's SQL text.
        limits: rows, time, memory, threads, spill, response bytes, concurrency (default:
            ``SqlLimits()``).

    Returns:
        ``(column_names, rows, truncated)``.

    Raises:
        QueryRejectedError: anything but a single read-only SELECT, or a query DuckDB refuses.
        QueryTimeoutError: past the time limit.
        QueryLimitError: over the memory, spill or response-size limit.
        QueryBusyError: too many queries at once in this process (503).
        StoreError: the store has no tables yet (503).
    """
    limits = limits or SqlLimits()
    if not query or not _COMMENT.sub("", query).strip().strip(";").strip():
        raise QueryRejectedError("empty query")
    checked = check_query(query, max_chars=limits.max_query_chars)
    if not store.tables_dir.is_dir():
        raise StoreError("the feature store has no tables yet; run `serlens run` first")
    return run_in_sandbox(store.tables_dir, checked, limits)
