"""The process behind one untrusted query: ``python -m serlens.shared.sql_worker``.

Started ahead of time by ``serlens.shared.sql``, it writes ``R`` once its imports are done,
reads one job as JSON on stdin, runs it in the sandboxed DuckDB (``sandbox_connection``),
writes ``A`` + the truncated flag + an Arrow IPC stream, or ``E`` + a JSON error, to
stdout, and exits.
Its parent kills it at the time limit or when it passes its memory budget.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import psutil
import pyarrow as pa

from serlens.shared.errors import QueryLimitError, ServiceError
from serlens.shared.sql import SqlLimits, fetch_table, sanitize
from serlens.shared.store.views import sandbox_connection


def _cap_address_space(limits: SqlLimits) -> None:
    """A backstop behind the parent's RSS watch: the address space may grow only by what is left of the budget.

    Resident memory cannot grow by more than the address space does (beyond pages already
    mapped), so a query that allocates faster than the parent polls still fails here, inside
    its budget, with an out-of-memory error the parent answers as a 400.
    """
    memory = psutil.Process().memory_info()
    cap = memory.vms + max(limits.memory_mb * 2**20 - memory.rss, 32 * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run_job(job: dict[str, Any], out: BinaryIO) -> None:
    """Run one job and write its answer to ``out``."""
    limits = SqlLimits(**job["limits"])
    over_memory = {"error": QueryLimitError.__name__,
                   "detail": f"query needs more than the {limits.memory_mb} MiB memory limit (or the spill limit)"}
    try:
        # No column comments: they cost more than a small query (``serlens schema`` has them).
        con = sandbox_connection(Path(job["root"]), job["sources"], limits, job["spill_dir"],
                                 damaged=job.get("damaged"), arrays=job.get("arrays"), comments=False)
        _cap_address_space(limits)
        table, truncated = fetch_table(con, job["query"], limits)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        out.write(b"A" + (b"1" if truncated else b"0") + sink.getvalue().to_pybytes())
        return
    except ServiceError as err:
        error: dict[str, str] = {"error": type(err).__name__, "detail": str(err)}
    except (duckdb.OutOfMemoryException, MemoryError, pa.ArrowMemoryError):
        error = over_memory
    except (duckdb.Error, pa.ArrowException, OSError, ValueError) as err:
        error = {"error": "QueryRejectedError", "detail": f"{type(err).__name__}: {sanitize(str(err))}"}
    out.write(b"E" + json.dumps(error).encode())


def main() -> None:
    """Wait for one job on stdin; answer on the original stdout (DuckDB's own prints go to stderr)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    out.write(b"R")  # ready: imports done; the parent starts the clock when it sends the job
    out.flush()
    raw = sys.stdin.buffer.read()
    if raw:
        run_job(json.loads(raw), out)
    out.close()


if __name__ == "__main__":
    main()
