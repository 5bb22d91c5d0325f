"""The one check of a feature matrix handed to an analysis (CKA, probes): shape, rows, values."""

from __future__ import annotations

import numpy as np


def matrix_problem(x: object, *, num_rows: int | None = None, rows_are: str = "clip") -> str | None:
    """Why ``x`` is not a usable (rows x features) matrix of finite numbers, or None when it is.

    Args:
        x: the matrix.
        num_rows: the row count it must have (None: any).
        rows_are: what one row is, for the message (``clip``, ``label``).
    """
    array = np.asarray(x)
    if array.ndim != 2 or array.shape[1] == 0:
        return f"shape {array.shape}; expected (clips, features) with at least one feature"
    if num_rows is not None and array.shape[0] != num_rows:
        return f"{array.shape[0]} rows; expected {num_rows}, one per {rows_are}"
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        return f"dtype {array.dtype}; expected numbers"
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array).all(axis=1)))
        return f"{bad} row(s) hold NaN or infinite values"
    return None
