"""Store rows to JSON and CSV: NaN and infinities become null, times ISO 8601, bytes hex."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import math
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np


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
