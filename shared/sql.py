"""Untrusted SQL over the feature store: one read-only SELECT, in a process of its own.

Part of the store layer (only this module and ``serlens.shared.store`` write SQL). A query
from a caller is decided by DuckDB's own parser before it runs: exactly one statement, of
type SELECT, that ``json_serialize_sql`` accepts (it serialises SELECT only, so EXPLAIN,
COPY, EXPORT, ATTACH, INSTALL/LOAD, SET, PRAGMA and CALL fail there too), calling none of
the functions that reveal settings or run SQL text (``_FORBIDDEN_FUNCTIONS``).

It then runs in a fresh child process whose DuckDB is in memory, sees the tables as Arrow
datasets registered over exactly the Parquet files the commit log lists, and has
``enable_external_access = false`` with its configuration locked: no file anywhere can be
read, listed (``glob``), written (``COPY ... TO``) or attached, and the DuckDB file that
``refresh_views`` rewrites is never opened, so a refresh cannot race a query. The parent
kills the child at the time limit and when its resident memory passes the budget, so
neither a slow operator nor an allocation outside DuckDB's buffer manager (``list(range(n))``)
outlives its limits; concurrent queries beyond ``max_concurrent`` get a 503.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import psutil
import pyarrow as pa

from serlens.shared.errors import (
    QueryBusyError,
    QueryLimitError,
    QueryRejectedError,
    QueryTimeoutError,
    ServiceError,
)
from serlens.shared.schema import TableSpec

#: Functions a caller may not call: they reveal settings, paths or the host, or run SQL text.
_FORBIDDEN_FUNCTIONS = frozenset({
    "current_setting", "duckdb_settings", "duckdb_temporary_files", "duckdb_extensions",
    "duckdb_secrets", "which_secret", "duckdb_databases", "duckdb_memory", "duckdb_external_file_cache",
    "duckdb_log_contexts", "duckdb_logs", "getenv", "getvariable", "query", "query_table",
    "pragma_database_size", "pragma_metadata_info", "pragma_storage_info", "pragma_version",
    "pragma_platform", "pragma_user_agent", "current_database", "current_schema", "version",
})

#: The folder, under the store's root, that holds one folder per table.
TABLES_DIR = "tables"
_PATH = re.compile(r"""(["'])[^"']*[/\\][^"']*\1|(?<![\w.])/[^\s"',)]+""")
_NUMBERS_AFTER = re.compile(r"\b(PID|pid|process)\s*\d+")
_SIZES = re.compile(r"\(?\d+(\.\d+)?\s*[KMGT]i?B(/\d+(\.\d+)?\s*[KMGT]i?B)?( used)?\)?")


@dataclass(frozen=True)
class SqlLimits:
    """Limits of one untrusted query.

    Attributes:
        max_rows: most rows returned; more are cut off and flagged ``truncated``.
        timeout_s: wall-clock limit, in seconds, from the start of the query process.
        memory_mb: resident memory of the query process, in MiB (DuckDB's own
            ``memory_limit`` is set below it, so it spills or fails first).
        threads: DuckDB threads per query.
        spill_mb: most bytes DuckDB may spill to its temporary folder, in MiB.
        max_response_bytes: largest result, in bytes (Arrow size), before rows are cut off.
        max_concurrent: queries running at once in one process; more get ``QueryBusyError``.
        max_query_chars: longest accepted query text.
        temp_dir: parent folder of each query's private spill folder (None: the system's).
    """

    max_rows: int = 10_000
    timeout_s: float = 10.0
    memory_mb: int = 1024
    threads: int = 1
    spill_mb: int = 1024
    max_response_bytes: int = 32 * 2**20
    max_concurrent: int = 2
    max_query_chars: int = 100_000
    temp_dir: str | None = None

    def __post_init__(self) -> None:
        """Refuse limits that would disable a guard.

        Raises:
            ValueError: a limit that is not positive (or memory under 128 MiB).
        """
        numbers = {k: v for k, v in vars(self).items() if k != "temp_dir"}
        bad = [k for k, v in numbers.items() if not v > 0]
        if bad or self.memory_mb < 128:
            raise ValueError(f"SqlLimits: {bad or ['memory_mb']} must be positive (memory_mb >= 128)")


def sql_literal(text: str) -> str:
    """``text`` as an SQL string literal (single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def dedupe_sql(spec: TableSpec, source: str, *, array: str | None = None) -> str:
    """The SELECT behind a table's view: every row of ``source``, newest row per key.

    Args:
        spec: the table.
        source: what to select from (a ``read_parquet(...)`` call or a registered name).
        array: DuckDB ARRAY type (``FLOAT[1024]``) the array column is cast to, so that the
            array functions apply (``array_cosine_similarity``); None: it stays a list.
    """
    keys = ", ".join(f'"{k}"' for k in spec.keys)
    columns = f'* REPLACE (CAST("{spec.array_column}" AS {array}) AS "{spec.array_column}")' if array else "*"
    return (f"SELECT {columns} FROM {source} "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY created_at DESC) = 1")


def sanitize(message: str) -> str:
    """The first line of a DuckDB error with paths, PIDs and byte counts removed."""
    first = (message.strip().splitlines() or ["query failed"])[0][:300]
    first = _PATH.sub("<path>", first)
    first = _NUMBERS_AFTER.sub(r"\1 <n>", first)
    return _SIZES.sub("", first).strip()


def _function_names(node: Any) -> set[str]:
    """Every ``function_name`` in a ``json_serialize_sql`` tree (scalar and table functions)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = item.get("function_name")
            if isinstance(name, str):
                found.add(name.lower())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def check_query(query: str, *, max_chars: int = 100_000) -> str:
    """The one read-only SELECT in ``query``, as DuckDB's parser reads it.

    Raises:
        QueryRejectedError: empty, too long, not exactly one statement, not a SELECT, or a
            call of a function in ``_FORBIDDEN_FUNCTIONS``.
    """
    if len(query) > max_chars:
        raise QueryRejectedError(f"query longer than {max_chars:,} characters")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as err:
        raise QueryRejectedError(f"cannot parse query: {sanitize(str(err))}") from err
    if len(statements) != 1:
        raise QueryRejectedError(f"exactly one statement per request, got {len(statements)}")
    statement = statements[0]
    try:
        kind = statement.type.name
    except ValueError:  # a statement type newer than the Python binding's enum
        kind = "an unknown statement type"
    if kind != "SELECT":
        raise QueryRejectedError(f"only SELECT is allowed, got {kind}")
    with duckdb.connect() as con:
        row = con.execute("SELECT json_serialize_sql(?)", [statement.query]).fetchone()
    tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise QueryRejectedError("only a plain SELECT is allowed")
    forbidden = sorted(_function_names(tree) & _FORBIDDEN_FUNCTIONS)
    if forbidden or any(name.startswith("pragma_") for name in _function_names(tree)):
        raise QueryRejectedError(f"function(s) not allowed: {', '.join(forbidden) or 'pragma_*'}")
    return statement.query


def fetch_table(con: duckdb.DuckDBPyConnection, query: str, limits: SqlLimits) -> tuple[pa.Table, bool]:
    """Run ``query`` and fetch at most ``limits.max_rows`` rows in small Arrow batches.

    Returns:
        ``(table, truncated)``.

    Raises:
        QueryLimitError: the rows fetched so far pass ``limits.max_response_bytes``.
    """
    reader = con.sql(query).to_arrow_reader(256)
    batches: list[pa.RecordBatch] = []
    size = rows = 0
    for batch in reader:
        size += batch.nbytes
        if size > limits.max_response_bytes:
            raise QueryLimitError(f"result larger than the {limits.max_response_bytes / 2**20:g} MiB "
                                  "response limit; select fewer rows or columns")
        batches.append(batch)
        rows += batch.num_rows
        if rows > limits.max_rows:
            break
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return table.slice(0, limits.max_rows), rows > limits.max_rows


_ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls for cls in (QueryRejectedError, QueryLimitError, QueryTimeoutError)
}
_running = 0
_running_lock = threading.Lock()
_spares: list[subprocess.Popen[bytes]] = []
_MAX_SPARES = 2


def _spawn_worker() -> subprocess.Popen[bytes]:
    """A fresh interpreter that imports the sandbox, then waits on stdin for one query."""
    return subprocess.Popen(
        [sys.executable, "-m", "serlens.shared.sql_worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(), start_new_session=True,
    )


def _ready(worker: subprocess.Popen[bytes]) -> bool:
    """Block until a worker says it is ready (``R``); False when it died first."""
    assert worker.stdout is not None  # noqa: S101 (a PIPE, see _spawn_worker)
    return worker.stdout.read(1) == b"R"


def warm_up() -> None:
    """Start a spare query process and wait until it is ready (imports done).

    The ingress calls this when a replica starts, so that the first query does not pay for
    the interpreter's start; every query starts the next spare behind it.
    """
    spare = _spawn_worker()
    kept = _ready(spare)
    with _running_lock:
        kept = kept and len(_spares) < _MAX_SPARES
        if kept:
            _spares.append(spare)
    if not kept:
        spare.kill()
        spare.wait()


def _take_worker() -> tuple[subprocess.Popen[bytes], bool]:
    """A worker and whether it is ready: a spare when there is one, else a new one.

    A new spare is started behind it.
    """
    with _running_lock:
        while _spares:
            worker, ready = _spares.pop(), True
            if worker.poll() is None:
                break
        else:
            worker, ready = _spawn_worker(), False
    threading.Thread(target=warm_up, daemon=True).start()
    return worker, ready


#: Longest a query process may take to start (imports), in seconds; not part of the time limit.
STARTUP_TIMEOUT_S = 60.0


def _wait(worker: subprocess.Popen[bytes], ready: bool, job: bytes, limits: SqlLimits) -> bytes:
    """Send the job once the worker is ready; poll until the answer is in or a limit passes.

    The time limit counts from the moment the job is sent (a new worker's start is not the
    query's time); the memory budget holds from the start.
    """
    answer: list[bytes] = []
    sent: list[float] = []
    cap = 2 * limits.max_response_bytes + 2**20

    def read() -> None:
        assert worker.stdin is not None and worker.stdout is not None  # noqa: S101 (PIPEs above)
        try:
            if not ready and not _ready(worker):
                return
            sent.append(time.monotonic())
            worker.stdin.write(job)
            worker.stdin.close()
        except OSError:
            return
        answer.append(worker.stdout.read(cap + 1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    watched = psutil.Process(worker.pid)
    startup_deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while reader.is_alive():
        reader.join(0.01)
        try:
            rss_mb = watched.memory_info().rss / 2**20
        except psutil.Error:
            rss_mb = 0.0
        if rss_mb > limits.memory_mb:
            raise QueryLimitError(f"query needs more than the {limits.memory_mb} MiB memory limit; stopped")
        if sent and time.monotonic() > sent[0] + limits.timeout_s:
            raise QueryTimeoutError(f"query ran past the {limits.timeout_s:g} s limit and was stopped")
        if not sent and time.monotonic() > startup_deadline:
            raise QueryBusyError("the query process did not start in time; retry in a moment")
    data = answer[0] if answer else b""
    if not sent:
        raise QueryBusyError("the query process did not start; retry in a moment")
    if len(data) > cap:
        raise QueryLimitError(f"result larger than the {limits.max_response_bytes / 2**20:g} MiB response limit")
    if not data:
        raise QueryLimitError(f"query stopped: it needed more than the {limits.memory_mb} MiB memory limit")
    return data


def _decode(data: bytes) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """Columns, rows and the truncated flag from a worker's answer (or raise its error)."""
    if data[:1] == b"E":
        error = json.loads(data[1:])
        raise _ERRORS.get(error["error"], QueryRejectedError)(error["detail"])
    table = pa.ipc.open_stream(io.BytesIO(data[2:])).read_all()
    rows = list(zip(*(column.to_pylist() for column in table.columns), strict=True))
    return list(table.column_names), rows, data[1:2] == b"1"


def run_in_sandbox(root: Path, sources: Mapping[str, Sequence[str]], query: str, limits: SqlLimits, *,
                   damaged: Mapping[str, str] | None = None,
                   arrays: Mapping[str, str] | None = None) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """Run a checked query (``check_query``) in a sandboxed worker process (``sql_worker``).

    ``sources`` are each table's committed files (relative to ``root``), read from the commit
    log by the caller: the worker reads exactly those, never a glob. ``damaged`` and ``arrays``
    are as ``sandbox_connection`` takes them.

    The worker gets the job as JSON and answers Arrow IPC (or a JSON error), so nothing it
    sends is unpickled here.

    Raises:
        QueryBusyError: ``limits.max_concurrent`` queries are already running here (503).
        QueryTimeoutError: past ``limits.timeout_s``.
        QueryLimitError: over the memory, spill or response-size limit.
        QueryRejectedError: a query DuckDB refuses (unknown table, forbidden file, type error).
    """
    global _running
    with _running_lock:
        if _running >= limits.max_concurrent:
            raise QueryBusyError(f"{limits.max_concurrent} queries are running; retry in a moment")
        _running += 1
    spill_dir = tempfile.mkdtemp(prefix="serlens-sql-", dir=limits.temp_dir)
    job = json.dumps({"root": str(root), "sources": {k: list(v) for k, v in sources.items()}, "query": query,
                      "damaged": dict(damaged or {}), "arrays": dict(arrays or {}), "limits": asdict(limits),
                      "spill_dir": spill_dir}).encode()
    try:
        worker, ready = _take_worker()
        try:
            data = _wait(worker, ready, job, limits)
        finally:
            worker.kill()
            worker.wait()
    except OSError as err:
        raise QueryBusyError("cannot start a query process; retry in a moment") from err
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
        with _running_lock:
            _running -= 1
    return _decode(data)
