"""Rows to files and back: schema checks, partition folders, file names, damage checks."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from serlens.shared.errors import StoreError
from serlens.shared.schema import TableSpec
from serlens.shared.store.files import sha256_file
from serlens.shared.store.log import DataFile


def utc_now() -> dt.datetime:
    """The current time, UTC, microsecond precision (the ``created_at`` of new rows)."""
    return dt.datetime.now(dt.UTC)


def check_columns(spec: TableSpec, names: Sequence[str]) -> None:
    """Raise ``StoreError`` naming the columns the table does not have."""
    unknown = sorted(set(names) - set(spec.schema.names))
    if unknown:
        raise StoreError(f"table {spec.name!r} has no column(s) {', '.join(unknown)}")


def partition_folder(spec: TableSpec, partition: Mapping[str, Any]) -> str:
    """``<col>=<value>/...`` for the leading partition columns given (values URI-encoded, as hive readers expect).

    Raises:
        StoreError: ``partition`` is not a prefix of the table's partition columns.
    """
    if set(partition) != set(spec.partition_by[: len(partition)]):
        raise StoreError(f"table {spec.name!r}: partition {sorted(partition)} is not a prefix of {spec.partition_by}")
    return "/".join(f"{c}={quote(str(partition[c]), safe='')}" for c in spec.partition_by[: len(partition)])


def new_file_path(folder: str) -> str:
    """A new, unique file name (time + uuid) in a folder given relative to the root."""
    stamp = utc_now().strftime("%Y%m%dT%H%M%S%f")
    return f"{folder}/part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"


def file_schema(spec: TableSpec, *, array_size: int | None = None) -> pa.Schema:
    """The columns inside a table's files: the schema less its partition columns (those are folder names).

    With ``array_size``, the array column as the fixed-size arrays of that length (``fixed_arrays``).
    """
    fields = [f for f in spec.schema if f.name not in spec.partition_by]
    if array_size:
        fields = [f.with_type(pa.list_(f.type.value_type, array_size)) if f.name == spec.array_column else f
                  for f in fields]
    return pa.schema(fields)


def to_table(spec: TableSpec, rows: pa.Table | Sequence[Mapping[str, Any]], config_hash: str) -> pa.Table:
    """Rows as a table of exactly the spec's schema, lineage columns filled in.

    Raises:
        StoreError: unknown or missing columns, or values of the wrong type.
    """
    now = utc_now()
    if isinstance(rows, pa.Table):
        tbl = rows
        if "config_hash" not in tbl.column_names:
            tbl = tbl.append_column("config_hash", pa.array([config_hash] * tbl.num_rows, pa.string()))
        if "created_at" not in tbl.column_names:
            tbl = tbl.append_column("created_at", pa.array([now] * tbl.num_rows, pa.timestamp("us", tz="UTC")))
    else:
        records = [{"config_hash": config_hash, "created_at": now, **dict(r)} for r in rows]
        check_columns(spec, sorted({k for r in records for k in r}))
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


def split_partitions(spec: TableSpec, tbl: pa.Table) -> list[tuple[str, pa.Table]]:
    """``(partition folder, rows without the partition columns)`` per partition of ``tbl``."""
    if not spec.partition_by:
        return [("", tbl)]
    keys = tbl.select(list(spec.partition_by)).to_pylist()
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(tuple(k[c] for c in spec.partition_by), []).append(i)
    inner = file_schema(spec).names
    return [(partition_folder(spec, dict(zip(spec.partition_by, key, strict=True))),
             tbl.take(pa.array(idx, pa.int64())).select(inner)) for key, idx in groups.items()]


def damage(root: Path, spec: TableSpec, item: DataFile) -> str | None:
    """What is wrong with a committed file (None: it matches its record and its table).

    Checks, in order: present, size, sha256, Parquet footer, columns and types.
    """
    path = root / item.path
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if size != item.bytes:
        return f"size {size} bytes, committed with {item.bytes}"
    if sha256_file(path) != item.sha256:
        return "content differs from its commit record (sha256)"
    try:
        found = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        return f"unreadable Parquet: {err}"
    expected = file_schema(spec, array_size=item.array_size)
    if found.remove_metadata() != expected.remove_metadata():
        return f"columns or types differ from table {spec.name!r}"
    return None


@functools.lru_cache(maxsize=64)
def duck_type(arrow_type: pa.DataType) -> str:
    """DuckDB's name for an Arrow type (partition columns and empty views)."""
    with duckdb.connect() as con:
        con.register("tbl", pa.table({"c": pa.nulls(1, arrow_type)}))
        found = con.execute("SELECT typeof(c) FROM tbl").fetchone()
    return str(found[0]) if found else "VARCHAR"


def fixed_arrays(spec: TableSpec, tbl: pa.Table) -> tuple[pa.Table, int | None]:
    """``tbl`` with its array column (``spec.array_column``) as fixed-size arrays, and their length.

    A file's vectors come from one encoder (embeddings are partitioned by fine-tuning run and
    checkpoint), so they share one length: stored as Arrow ``fixed_size_list``, pandas, polars
    and pyarrow read fixed-size arrays, and the SQL views give DuckDB an ARRAY column
    (``array_type``). Vectors of different lengths stay a list (length None).
    """
    name = spec.array_column
    if not name or name not in tbl.column_names or not tbl.num_rows or tbl.column(name).null_count:
        return tbl, None
    column = tbl.column(name)
    if not pa.types.is_list(column.type):
        return tbl, None
    bounds = pc.min_max(pc.list_value_length(column))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if not low or low != high:
        return tbl, None
    index = tbl.schema.get_field_index(name)
    fixed = tbl.schema.field(index).with_type(pa.list_(column.type.value_type, low))
    return tbl.set_column(index, fixed, column.cast(fixed.type)), low


def array_type(spec: TableSpec, files: Sequence[DataFile]) -> str | None:
    """DuckDB's ARRAY type of the array column when every file's vectors share one length, else None."""
    sizes = {f.array_size for f in files}
    if not spec.array_column or not files or len(sizes) != 1 or None in sizes:
        return None
    value_type = spec.schema.field(spec.array_column).type.value_type
    return f"{duck_type(value_type)}[{sizes.pop()}]"
