"""``FeatureStore``: write rows as committed Parquet files, read them back through the log."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from serlens.shared.errors import StoreError
from serlens.shared.schema import STAGES, TableSpec, all_tables, table
from serlens.shared.sql import TABLES_DIR, SqlLimits, dedupe_sql, sql_literal
from serlens.shared.store.files import parquet_bytes, quarantine, sha256_bytes, write_durable
from serlens.shared.store.log import CommitLog, DataFile, Snapshot
from serlens.shared.store.tables import (
    array_type,
    check_columns,
    damage,
    duck_type,
    fixed_arrays,
    new_file_path,
    partition_folder,
    split_partitions,
    to_table,
)
from serlens.shared.store.views import sandbox_connection

DB_FILENAME = "serlens.duckdb"
#: A partition with more committed files than this is compacted by the write that passes it.
AUTO_COMPACT_FILES = 32


def stage_txn(stage: str, stage_key: str) -> str:
    """The transaction a stage's writes belong to until ``mark_stage`` commits them."""
    return f"{stage}/{stage_key}"


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
    """Parquet tables under ``root``, made visible by commit records (see ``serlens.shared.store``).

    Args:
        root: the store's folder; created if missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.tables_dir = self.root / TABLES_DIR
        self.db_path = self.root / DB_FILENAME
        self.log = CommitLog(self.root)

    # ------------------------------------------------------------------ layout

    def init(self) -> FeatureStore:
        """Create the table and log folders (no files: schemas live in code, rows in the log)."""
        for spec in all_tables():
            (self.tables_dir / spec.name).mkdir(parents=True, exist_ok=True)
        self.log.dir.mkdir(parents=True, exist_ok=True)
        return self

    def table_glob(self, name: str) -> str:
        """A glob over every Parquet file of a table on disk, committed or not (for outside tools only)."""
        return str(self.tables_dir / name / "**" / "*.parquet")

    def committed_files(self, name: str, *, partition: Mapping[str, Any] | None = None,
                        state: Snapshot | None = None, pending: bool = False) -> list[DataFile]:
        """The files of a table that readers see (``pending``: with stage writes not yet committed)."""
        spec = table(name)
        prefix = f"{TABLES_DIR}/{name}/"
        if partition:
            prefix += partition_folder(spec, partition) + "/"
        state = state or self.log.snapshot()
        return state.live(name, prefix) if pending else state.visible(name, prefix)

    def view_sql(self, spec: TableSpec, *, partition: Mapping[str, Any] | None = None) -> str:
        """The SELECT behind a table's catalogue view: its committed files, newest row per key.

        The files are named relative to the store's root, as DuckDB resolves them against its
        working folder or ``file_search_path``: the catalogue keeps working wherever the
        workdir is moved or copied.
        """
        files = self.committed_files(spec.name, partition=partition)
        return dedupe_sql(spec, f"({self.parquet_sql(spec, files, relative=True)})", array=array_type(spec, files))

    def parquet_sql(self, spec: TableSpec, files: Sequence[DataFile], *, positions: bool = False,
                    relative: bool = False) -> str:
        """``SELECT`` every column of the given files, in the spec's order.

        Args:
            spec: the table.
            files: its files.
            positions: also ``filename`` and ``file_row_number`` (to keep the written order).
            relative: name the files relative to the root (for the catalogue), not by absolute path.
        """
        if not files:
            return "SELECT " + ", ".join(f'NULL::{duck_type(f.type)} AS "{f.name}"' for f in spec.schema) + " LIMIT 0"
        hive = ", ".join(f"'{c}': '{duck_type(spec.schema.field(c).type)}'" for c in spec.partition_by)
        listed = ", ".join(sql_literal(str(f.path if relative else self.root / f.path)) for f in files)
        options = f", hive_partitioning = true, hive_types = {{{hive}}}" if hive else ", hive_partitioning = false"
        columns = ", ".join(f'"{c}"' for c in spec.schema.names)
        if positions:
            options += ", filename = true, file_row_number = true"
            columns += ", filename, file_row_number"
        return f"SELECT {columns} FROM read_parquet([{listed}]{options})"

    # ------------------------------------------------------------------ writing

    def write(self, name: str, rows: pa.Table | Sequence[Mapping[str, Any]], *, config_hash: str,
              stage: str | None = None) -> Path | None:
        """Append rows to a table: one new Parquet file per partition, all in one commit.

        Args:
            name: table name (see ``serlens.shared.schema``).
            rows: a pyarrow table or a list of dicts with the table's columns;
                ``config_hash`` and ``created_at`` are filled in when absent.
            config_hash: lineage: the hash of the config (or stage key) that made the rows.
            stage: the stage writing them: the rows stay invisible (``keys_present`` sees
                them) until ``mark_stage(stage, config_hash)`` commits the stage.

        Returns:
            The path of the last file written, or None when ``rows`` is empty.

        Raises:
            StoreError: the rows do not fit the table's schema, or the disk is full (then
                nothing of this write is kept).
        """
        spec = table(name)
        tbl = to_table(spec, rows, config_hash)
        if tbl.num_rows == 0:
            return None
        txn = stage_txn(stage, config_hash) if stage else None
        added = self._commit(spec, tbl, txn=txn)
        if not txn:
            from serlens.shared.store.maintenance import compact_folder

            for item in added:
                try:
                    compact_folder(self, name, item.folder, min_files=AUTO_COMPACT_FILES + 1)
                except (StoreError, OSError, pa.ArrowException):
                    pass  # an optimisation only: the rows are committed; `serlens store check` finds damage
        return self.root / added[-1].path

    def _commit(self, spec: TableSpec, tbl: pa.Table, *, txn: str | None, commit: Sequence[str] = ()) -> list[DataFile]:
        """Write each partition's file durably, then publish them in one record (or remove them)."""
        if not self.log.exists():
            from serlens.shared.store.maintenance import needs_migration

            if needs_migration(self):
                raise StoreError(f"the store at {self.root} is in the previous layout (no commit log); "
                                 "run `serlens store repair` to migrate it first")
        added: list[DataFile] = []
        try:
            for folder, part in split_partitions(spec, tbl):
                path = new_file_path(f"{TABLES_DIR}/{spec.name}/{folder}".rstrip("/"))
                part, size = fixed_arrays(spec, part)
                data = parquet_bytes(part)
                write_durable(self.root / path, data)
                added.append(DataFile(path=path, table=spec.name, rows=part.num_rows, bytes=len(data),
                                      sha256=sha256_bytes(data), txn=txn, committed=txn is None, array_size=size))
            self.log.publish(add=added, commit=commit)
        except BaseException:
            for item in added:  # not in the log: nobody can see them; leave nothing behind
                (self.root / item.path).unlink(missing_ok=True)
            raise
        return added

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
        pending: bool = False,
    ) -> pa.Table:
        """Read a table's committed rows (newest row per key) into Arrow.

        Runs on a private in-memory DuckDB over the files the commit log lists, so any
        process may read at any time without locking, and never sees half a commit.

        Args:
            name: table name.
            filters: ``{column: value}``, all of which must hold; a list or tuple value means
                any of its values.
            created_since: keep only rows written at or after this UTC time.
            columns: columns to return (default: all).
            order_by: columns to sort by.
            partition: leading partition values; only those folders are read.
            pending: also rows that stages wrote but have not committed yet.

        Raises:
            StoreError: a column that the table does not have, or a damaged file (named and
                moved to ``_quarantine/``; ``serlens store repair`` drops its rows).
        """
        spec = table(name)
        check_columns(spec, [*(columns or ()), *(filters or {}), *(order_by or ())])
        for _ in range(5):  # a compaction may retire a file between listing and reading it
            files = self.committed_files(name, partition=partition, pending=pending)
            if not files:
                return spec.schema.empty_table().select(list(columns) if columns else spec.schema.names)
            if self._all_present(files):
                break
        cols = ", ".join(f'"{c}"' for c in columns) if columns else "* EXCLUDE (filename, file_row_number)"
        sql = f"SELECT {cols} FROM ({dedupe_sql(spec, '(' + self.parquet_sql(spec, files, positions=True) + ')')})"
        where, params = _conditions(filters or {}, created_since)
        if where:
            sql += f" WHERE {where}"
        if order_by:
            sql += " ORDER BY " + ", ".join(f'"{c}"' for c in order_by)
        else:  # the order rows were written in: commit order, then row order within a file
            sql += " ORDER BY list_position(?::VARCHAR[], filename), file_row_number"
            params.append([str(self.root / f.path) for f in files])
        with duckdb.connect() as con:
            try:
                return con.sql(sql, params=params).to_arrow_table()
            except (duckdb.Error, pa.ArrowException, OSError) as err:
                self.raise_damaged(spec, files, err)
                raise  # unreachable: raise_damaged always raises

    def _all_present(self, files: Sequence[DataFile]) -> bool:
        """Whether every file is there with its recorded size; quarantine and name those that are not.

        Returns:
            False when a file is missing because a newer commit retired it (read again).
        """
        wrong: list[str] = []
        missing: list[str] = []
        for item in files:
            try:
                size = (self.root / item.path).stat().st_size
            except FileNotFoundError:
                missing.append(item.path)
                continue
            if size != item.bytes:
                quarantine(self.root, item.path)
                wrong.append(f"{item.path} ({size} bytes, committed with {item.bytes})")
        if wrong:
            raise StoreError(f"damaged file(s) moved to _quarantine/: {'; '.join(wrong)}; "
                             "run `serlens store repair` to drop their rows (a rerun recomputes them)")
        if missing:
            live = self.log.snapshot().files
            gone = [p for p in missing if p in live]
            if gone:
                raise StoreError(f"committed file(s) missing or quarantined: {', '.join(gone)}; "
                                 "run `serlens store repair`")
            return False
        return True

    def raise_damaged(self, spec: TableSpec, files: Sequence[DataFile], err: Exception) -> None:
        """Find the files behind a read error (checksum, footer, schema), quarantine and name them.

        Raises:
            StoreError: always; naming the damaged files when any are found.
        """
        bad = [item.path for item in files if damage(self.root, spec, item)]
        for path in bad:
            quarantine(self.root, path)
        if bad:
            raise StoreError(f"damaged file(s) in table {spec.name!r} moved to _quarantine/: {', '.join(bad)}; "
                             "run `serlens store repair` to drop their rows (a rerun recomputes them)") from err
        raise StoreError(f"cannot read table {spec.name!r}: {err}") from err

    def keys_present(self, name: str, columns: Sequence[str], *, filters: Mapping[str, Any] | None = None,
                     partition: Mapping[str, Any] | None = None) -> set[tuple[Any, ...]]:
        """The distinct tuples of ``columns`` already stored, committed or written by an unfinished stage.

        A stage resumed after a crash skips what it wrote before; its ``mark_stage`` then
        commits the old and the new rows together.
        """
        rows = self.read(name, columns=columns, filters=filters, partition=partition, pending=True)
        return set(zip(*(rows.column(c).to_pylist() for c in columns), strict=True)) if rows.num_rows else set()

    # ------------------------------------------------------------------ stages

    def stage_done(self, stage: str, stage_key: str) -> bool:
        """Whether a stage finished before with exactly this key (its inputs and config)."""
        return bool(self.keys_present(STAGES.name, ["stage"], filters={"stage": stage, "stage_key": stage_key}))

    def pending_rows(self, stage: str, stage_key: str) -> int:
        """Rows a stage wrote (``write(..., stage=...)``) that its mark has not committed yet."""
        return sum(f.rows for f in self.log.snapshot().pending(stage_txn(stage, stage_key)))

    def mark_stage(self, stage: str, stage_key: str, *, rows: int, seconds: float,
                   nodes: Mapping[str, int] | None = None) -> None:
        """Record that a stage finished, and make its rows visible, in one commit.

        Args:
            stage: the stage's name.
            stage_key: its key.
            rows: rows it wrote.
            seconds: how long it took.
            nodes: items processed per Ray node id, for stages that fan out over the cluster.
        """
        row = {"stage": stage, "stage_key": stage_key, "rows": rows, "seconds": seconds,
               "nodes_json": json.dumps(dict(nodes)) if nodes else None}
        self._commit(STAGES, to_table(STAGES, [row], stage_key), txn=None, commit=[stage_txn(stage, stage_key)])

    # ------------------------------------------------------------------ DuckDB

    def refresh_views(self) -> bool:
        """Rewrite the views of the DuckDB catalogue file (for users' own DuckDB clients).

        Returns:
            True when written; False when a reader holds the file open (serlens' own
            readers build their views from the log, so nothing waits for it).

        Raises:
            StoreError: the catalogue lock is held past its wait, or the file is damaged.
        """
        from serlens.shared.store.catalog import write_catalogue

        return write_catalogue(self)

    def connect_readonly(self, *, sandboxed: bool = True,
                         limits: SqlLimits | None = None) -> duckdb.DuckDBPyConnection:
        """Open the store's views read-only.

        Args:
            sandboxed: an in-memory DuckDB whose views read the committed Parquet through
                Arrow and which can touch no file at all (external access off, configuration
                locked), for untrusted SQL; False: the DuckDB catalogue file, opened read-only
                (its views rewritten first when they are behind the log or the store moved,
                and the file is free).
            limits: memory, threads and spill limits of the sandbox (default ``SqlLimits()``).

        Raises:
            StoreError: when the store has no commit log yet.
        """
        import tempfile

        if not self.log.exists():
            raise StoreError(f"no feature store at {self.root} (no commit log); run `serlens run` first")
        if sandboxed:
            limits = limits or SqlLimits()
            sources, damaged, arrays = self.sources()
            return sandbox_connection(self.root, sources, limits,
                                      tempfile.mkdtemp(prefix="serlens-sql-", dir=limits.temp_dir), damaged=damaged,
                                      arrays=arrays)
        from serlens.shared.store.catalog import open_catalogue

        return open_catalogue(self)

    def sources(self) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str]]:
        """Each table's committed files (relative paths), checked present with their recorded sizes.

        Returns:
            ``(files per table, {table: error}, {table: ARRAY type of its array column})``: a
            table with a damaged file (quarantined and named in its error) is left out, so the
            others stay readable; the ARRAY type is there when its files' vectors share a length.
        """
        sources: dict[str, list[str]] = {}
        damaged: dict[str, str] = {}
        arrays: dict[str, str] = {}
        state = self.log.snapshot()
        for spec in all_tables():
            for _ in range(5):
                files = state.visible(spec.name)
                try:
                    if self._all_present(files):
                        sources[spec.name] = [f.path for f in files]
                        if found := array_type(spec, files):
                            arrays[spec.name] = found
                        break
                except StoreError as err:
                    damaged[spec.name] = str(err)
                    break
                state = self.log.snapshot()
        return sources, damaged, arrays


