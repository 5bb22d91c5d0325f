"""Store rows to JSON and CSV: NaN and infinities become null, times ISO 8601, bytes hex.

``row_model`` gives the JSON Schema of such a row, for the API document.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import math
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ConfigDict, Field, create_model

from serlens.shared.column_docs import describe
from serlens.shared.schema import table


def jsonable(value: Any) -> Any:
    """A value (nested dicts, lists, numpy and DuckDB scalars) that strict ``json.dumps`` takes."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return jsonable(float(value))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def rows_to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text with a header line; null and non-finite values as empty cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else v for v in jsonable(list(row))])
    return buffer.getvalue()


def json_type(kind: pa.DataType) -> Any:
    """The type of a column's values as ``jsonable`` writes them (a float is null when not finite)."""
    if pa.types.is_boolean(kind):
        return bool
    if pa.types.is_integer(kind):
        return int
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return float | None
    if pa.types.is_timestamp(kind):
        return dt.datetime
    if pa.types.is_date(kind):
        return dt.date
    if pa.types.is_duration(kind):
        return float
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        item: Any = json_type(kind.value_type)
        return list[item]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        return str  # binary as hex
    return Any


@cache
def row_model(table_name: str, columns: tuple[str, ...] | None = None, model_name: str | None = None) -> Any:
    """The JSON body of one row of a store table (``jsonable``'s encoding), for the API document.

    Built from the table's schema and ``column_docs``, so a column is stated once; cached, so each
    model is one named component however often an app is built.

    Args:
        table_name: a table of ``serlens.shared.schema``.
        columns: the columns a body carries (default: all), kept in the table's order.
        model_name: the component's name (default: ``<Table>Row``, e.g. ``CheckpointsRow``).

    Raises:
        KeyError: no such table, or a column it does not have.
    """
    spec = table(table_name)
    missing = set(columns or ()) - set(spec.schema.names)
    if missing:
        raise KeyError(f"{table_name} has no column(s) {sorted(missing)}")
    fields: dict[str, Any] = {
        f.name: (json_type(f.type) | None if f.nullable else json_type(f.type),
                 Field(description=describe(spec.name, f.name)))
        for f in spec.schema
        if columns is None or f.name in columns
    }
    name = model_name or "".join(part.title() for part in spec.name.split("_")) + "Row"
    return create_model(name, __config__=ConfigDict(extra="forbid"),
                        __doc__=f"One row of the `{spec.name}` table: {spec.description}.", **fields)
