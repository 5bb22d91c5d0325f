"""The /sql sandbox against hostile queries, on a real DuckDB over a real store in tmp_path.

Every statement type, wrapped in EXPLAIN / EXPLAIN ANALYZE / CTEs / comments / several
statements, is refused and leaves the store's file tree byte-identical; memory bombs stop
under an RSS budget; the time limit holds within 20 %; concurrent queries and queries during
a view refresh end either in rows or in a named error.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import psutil
import pytest

from serlens.shared.errors import (
    QueryBusyError,
    QueryLimitError,
    QueryRejectedError,
    QueryTimeoutError,
    ServiceError,
)
from serlens.shared.sql import SqlLimits, check_query, sanitize, warm_up
from serlens.shared.store import FeatureStore, run_readonly_query

LIMITS = SqlLimits(timeout_s=5, memory_mb=512, max_concurrent=8)


def tree_hash(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """A store with rows in two tables and its views written."""
    root = tmp_path_factory.mktemp("store")
    store = FeatureStore(root).init()
    for i in range(3):
        store.mark_stage(f"stage-{i}", f"key-{i}", rows=10 * i, seconds=0.5 * i)
    store.mark_stage("stage-0", "key-0", rows=99, seconds=1.0)  # a newer row for the same key
    store.refresh_views()
    return store


def part_file(store: FeatureStore) -> str:
    return str(next((store.tables_dir / "stages").rglob("part-2*.parquet")))


# Every statement type DuckDB knows, and SELECTs that would touch a file or reveal settings.
WRITES = [
    "INSERT INTO stages VALUES (1)", "UPDATE stages SET rows = 0", "DELETE FROM stages",
    "CREATE TABLE t AS SELECT 1", "CREATE VIEW v AS SELECT 1", "CREATE MACRO m(a) AS a",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "DROP VIEW stages", "ALTER VIEW stages RENAME TO x",
    "COPY (SELECT 1) TO '{part}' (FORMAT csv)", "COPY stages FROM '{part}'", "COPY FROM DATABASE memory TO x",
    "EXPORT DATABASE '{tables}'", "IMPORT DATABASE '{tables}'", "ATTACH '{tables}/x.duckdb' AS x", "DETACH x",
    "INSTALL httpfs", "LOAD httpfs", "SET memory_limit = '100GB'", "RESET threads", "PRAGMA version",
    "CALL pragma_version()", "PREPARE p AS SELECT 1", "EXECUTE p", "BEGIN TRANSACTION", "COMMIT", "VACUUM",
    "ANALYZE", "CHECKPOINT", "USE memory", "SET VARIABLE v = 1", "UPDATE EXTENSIONS",
    "MERGE INTO stages USING (SELECT 1 AS a) s ON true WHEN MATCHED THEN DELETE",]
READS_OF_FILES = [
    "SELECT * FROM glob('{tables}/**')", "SELECT * FROM read_parquet('{part}')", "SELECT * FROM '{part}'",
    "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('{part}')", "SELECT current_setting('temp_directory')",
    "SELECT * FROM duckdb_settings()", "SELECT * FROM query('COPY (SELECT 1) TO ''{part}''')",
    "SELECT * FROM duckdb_temporary_files()", "SELECT * FROM pragma_database_size()",
]
WRAPPERS = [
    "{s}", "EXPLAIN {s}", "EXPLAIN ANALYZE {s}", "WITH c AS (SELECT 1) {s}", "/* note */ {s}",
    "-- note\n{s}", "SELECT 1; {s}", "{s}; SELECT 1", "SELECT * FROM ({s})",
]


@pytest.mark.parametrize("statement", WRITES + READS_OF_FILES)
def test_every_statement_type_in_every_wrapper_is_refused_and_writes_nothing(store, statement):
    before = tree_hash(store.root)
    sql = statement.format(part=part_file(store), tables=store.tables_dir)
    for wrapper in WRAPPERS:
        query = wrapper.format(s=sql)
        with pytest.raises(QueryRejectedError) as refused:
            run_readonly_query(store, query, limits=LIMITS)
        assert str(store.root) not in str(refused.value), query
    assert tree_hash(store.root) == before


def test_a_plain_select_reads_the_views_with_the_newest_row_per_key(store):
    columns, rows, truncated = run_readonly_query(
        store, "SELECT stage, rows FROM stages ORDER BY stage", limits=LIMITS
    )
    assert columns == ["stage", "rows"] and not truncated
    assert rows == [("stage-0", 99), ("stage-1", 10), ("stage-2", 20)]
    _, rows, truncated = run_readonly_query(store, "SELECT * FROM range(50)", limits=SqlLimits(max_rows=7))
    assert len(rows) == 7 and truncated


def test_reads_of_the_catalog_are_selects_and_allowed(store):
    # DuckDB parses these as SELECTs over its catalog: harmless, and what a newcomer types first.
    tables = {row[0] for row in run_readonly_query(store, "SHOW TABLES", limits=LIMITS)[1]}
    assert {"stages", "cka", "checkpoints"} <= tables
    columns = run_readonly_query(store, "DESCRIBE stages", limits=LIMITS)[1]
    assert [row[0] for row in columns][:2] == ["stage", "stage_key"]


def test_the_parser_decides_not_strings():
    # A statement hidden in a string literal or a comment is data, not SQL.
    assert check_query("SELECT 'COPY x TO y; DROP TABLE t' AS s -- ATTACH")
    with pytest.raises(QueryRejectedError, match="EXPLAIN"):
        check_query("explain analyze select 1")
    with pytest.raises(QueryRejectedError, match="exactly one"):
        check_query("SELECT 1;;SELECT 2")


def test_errors_leak_no_path_pid_or_setting(store):
    message = sanitize(
        f'IO Error: Could not set lock on file "{store.db_path}": Conflicting lock is held in '
        "/usr/bin/python3 (PID 4242) by user root. (240.0 MiB/244.1 MiB used)"
    )
    assert str(store.root) not in message and "4242" not in message and "MiB" not in message
    with pytest.raises(QueryRejectedError) as refused:
        run_readonly_query(store, f"SELECT * FROM read_parquet('{part_file(store)}')", limits=LIMITS)
    assert "/" not in str(refused.value).replace("<path>", "")


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def unique_mb(process: psutil.Process) -> float:
    """Memory only this process holds (USS), pages it shares with the spares' libraries left out."""
    return process.memory_full_info().uss / 2**20


@pytest.mark.parametrize(
    "bomb",
    [
        "SELECT repeat('x', 100000000) FROM range(20)",
        "SELECT list(range(200000000))",
        "SELECT count(*) FROM range(1000000000000) a, range(1000000000000) b",
        "SELECT string_agg(repeat('y', 1000), ',') FROM range(10000000)",
    ],
)
def test_memory_bombs_stop_under_the_rss_budget(store, bomb):
    limits = SqlLimits(timeout_s=20, memory_mb=384)
    me = psutil.Process()
    peak = {"mb": 0.0}
    done = threading.Event()

    # Processes that were there before (a session's Ray, say) are not the query's.
    before = {c.pid for c in me.children(recursive=True)}

    ours = me.cmdline()

    def watch() -> None:  # this process, and what the query's worker and new spares add
        while not done.is_set():
            added = 0.0
            for child in me.children(recursive=True):
                try:
                    # A spare being started is, until its exec, this process (vfork: our memory).
                    if child.pid not in before and child.cmdline() != ours:
                        added += unique_mb(child)
                except psutil.Error:
                    pass  # gone between the listing and the read
            peak["mb"] = max(peak["mb"], rss_mb(me) + added)
            time.sleep(0.005)

    baseline = rss_mb(me)
    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        with pytest.raises((QueryLimitError, QueryTimeoutError)):
            run_readonly_query(store, bomb, limits=limits)
    finally:
        done.set()
        watcher.join()
    # The query worker's budget (its address space may grow only by what is left of it), the
    # spares started while it runs (an idle query process: Python, DuckDB and pyarrow, at most
    # two at once) and some slack for pages mapped before the cap.
    idle_worker_mb = 200
    assert peak["mb"] - baseline < limits.memory_mb + 2 * idle_worker_mb + 100, peak
    assert time.monotonic() - started < limits.timeout_s * 1.2


def test_the_response_size_limit_holds(store):
    with pytest.raises(QueryLimitError, match="response limit"):
        run_readonly_query(store, "SELECT repeat('x', 100000) FROM range(1000)",
                           limits=SqlLimits(max_response_bytes=10 * 2**20))


@pytest.mark.parametrize("timeout_s", [2.0, 5.0])
def test_the_time_limit_holds_within_20_percent(store, timeout_s):
    warm_up()  # a ready query process, as the ingress keeps one: the clock is the query's own
    started = time.monotonic()
    with pytest.raises(QueryTimeoutError):
        run_readonly_query(store, "SELECT sum(hash(i)) FROM range(1000000000000) t(i)",
                           limits=SqlLimits(timeout_s=timeout_s))
    elapsed = time.monotonic() - started
    assert timeout_s <= elapsed < timeout_s * 1.2, elapsed


def run_all(store: FeatureStore, queries: int, limits: SqlLimits) -> list[object]:
    """Run ``queries`` queries at once; each outcome is its rows or the exception it raised."""
    outcomes: list[object] = []

    def one() -> None:
        try:
            outcomes.append(run_readonly_query(store, "SELECT count(*) FROM stages", limits=limits)[1])
        except Exception as err:  # noqa: BLE001 (the test records every outcome)
            outcomes.append(err)

    threads = [threading.Thread(target=one) for _ in range(queries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_queries_get_rows_or_a_named_503(store):
    outcomes = run_all(store, 6, SqlLimits(timeout_s=20, max_concurrent=2))
    assert all(o == [(3,)] or isinstance(o, QueryBusyError) for o in outcomes), outcomes
    assert any(o == [(3,)] for o in outcomes)
    assert QueryBusyError.http_status == 503


def test_queries_during_a_view_refresh_never_fail_unnamed(store):
    stop = threading.Event()
    refreshes = []

    def refresh() -> None:
        while not stop.is_set():
            try:
                refreshes.append(store.refresh_views())
            except ServiceError as err:
                refreshes.append(err)

    refresher = threading.Thread(target=refresh)
    refresher.start()
    try:
        outcomes = [o for _ in range(3) for o in run_all(store, 2, SqlLimits(timeout_s=20))]
    finally:
        stop.set()
        refresher.join()
    assert refreshes and all(o == [(3,)] for o in outcomes), outcomes


def test_the_sandboxed_connection_of_open_store_cannot_write(store, tmp_path):
    con = store.connect_readonly(sandboxed=True)
    try:
        assert con.execute("SELECT count(*) FROM stages").fetchone() == (3,)
        target = tmp_path / "stolen.csv"
        with pytest.raises(Exception, match="disabled by configuration"):
            con.execute(f"COPY (SELECT * FROM stages) TO '{target}'")
        with pytest.raises(Exception, match="locked"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()
    assert not target.exists()
