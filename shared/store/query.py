"""Untrusted SQL over the committed files (the sandbox itself is ``serlens.shared.sql``)."""

from __future__ import annotations

import re
from typing import Any

from serlens.shared.errors import QueryRejectedError, StoreError
from serlens.shared.sql import SqlLimits, check_query, run_in_sandbox
from serlens.shared.store.feature_store import FeatureStore

_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def run_readonly_query(
    store: FeatureStore,
    query: str,
    *,
    limits: SqlLimits | None = None,
) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """Run one untrusted SELECT against the store's views, sandboxed (``serlens.shared.sql``).

    The views are built from the commit log (the files committed when the query starts),
    so a query never sees half a stage, and the DuckDB catalogue file is never opened.

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
        StoreError: the store has no tables yet, or a damaged file (named, quarantined) (503).
    """
    limits = limits or SqlLimits()
    if not query or not _COMMENT.sub("", query).strip().strip(";").strip():
        raise QueryRejectedError("empty query")
    checked = check_query(query, max_chars=limits.max_query_chars)
    if not store.log.exists():
        raise StoreError("the feature store has no tables yet; run `serlens run` first")
    sources, damaged, arrays = store.sources()
    return run_in_sandbox(store.root, sources, checked, limits, damaged=damaged, arrays=arrays)
