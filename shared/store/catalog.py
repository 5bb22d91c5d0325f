"""The DuckDB catalogue file (``serlens.duckdb``): views for users' own DuckDB clients.

serlens' own readers never open it (they build their views from the commit log). It is
written by one process at a time under a lock folder (``serlens.duckdb.lock/``, created
with ``mkdir``, which is atomic on local and network file systems alike; no fcntl/flock),
holding ``owner.json`` (host, pid, time); a lock older than ``STALE_LOCK_S`` or whose
owner process is gone from this host is broken by renaming it away (only one breaker wins).
Views list the committed files relative to the store's folder, so a moved or copied workdir
answers as it is: DuckDB resolves relative paths against its working folder, or against
``file_search_path`` (``open_catalogue`` sets it; other clients open the file from the store
folder or set it themselves). ``serlens_meta`` records the log record the views were written
from (and, for information, where); the next ``refresh_views`` (every run, ``serlens store
views``, or serlens opening the catalogue) catches up with newer records. Neither the
catalogue nor the commit log holds an absolute path to a data file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from serlens.shared.errors import StoreError
from serlens.shared.schema import SCHEMA_VERSION, all_tables
from serlens.shared.store.views import derived_statements

if TYPE_CHECKING:
    from serlens.shared.store.feature_store import FeatureStore

STALE_LOCK_S = 300.0
LOCK_WAIT_S = 120.0


def _owner_gone(lock: Path) -> bool:
    """Whether the lock's owner is a process of this host that no longer runs."""
    try:
        owner = json.loads((lock / "owner.json").read_text())
    except (OSError, ValueError):
        return False
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


@contextmanager
def folder_lock(lock: Path, *, wait_s: float = LOCK_WAIT_S, stale_s: float = STALE_LOCK_S) -> Iterator[None]:
    """Hold ``lock`` (a folder) for the ``with`` block.

    Raises:
        StoreError: another live owner held it for all of ``wait_s`` seconds (named).
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock.mkdir()
            break
        except FileExistsError:
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > stale_s or _owner_gone(lock):
                stale = lock.with_name(f"{lock.name}.stale-{uuid.uuid4().hex[:8]}")
                try:
                    lock.rename(stale)
                    shutil.rmtree(stale, ignore_errors=True)
                except OSError:
                    pass
                continue
            if time.monotonic() > deadline:
                raise StoreError(f"{lock} is held by {_describe(lock)} for {age:.0f} s; "
                                 f"remove the folder if that process is gone") from None
            time.sleep(0.05)
    (lock / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                  "time": time.time()}))
    try:
        yield
    finally:
        shutil.rmtree(lock, ignore_errors=True)


def _describe(lock: Path) -> str:
    try:
        owner = json.loads((lock / "owner.json").read_text())
        return f"pid {owner['pid']} on {owner['host']}"
    except (OSError, ValueError, KeyError):
        return "another process"


def views_current(store: FeatureStore) -> bool:
    """Whether the catalogue's views were written from the newest log record, for this schema.

    Where they were written does not matter: they name files relative to the store folder.
    """
    try:
        with duckdb.connect(str(store.db_path), read_only=True) as con:
            meta = con.execute("SELECT schema_version, log_seq FROM serlens_meta").fetchone()
    except duckdb.Error:
        return False
    return meta is not None and tuple(meta) == (SCHEMA_VERSION, store.log.head())


def write_catalogue(store: FeatureStore) -> bool:
    """Rewrite every view from the newest log state (see ``FeatureStore.refresh_views``)."""
    store.init()
    with folder_lock(store.root / f"{store.db_path.name}.lock"):
        state_seq = store.log.head()
        try:
            con = duckdb.connect(str(store.db_path))
        except duckdb.IOException:
            return False  # a reader holds it open; the next refresh catches up
        try:
            con.execute("SET file_search_path = ?", [str(store.root)])  # views bind when created
            for spec in all_tables():
                con.execute(f'CREATE OR REPLACE VIEW "{spec.name}" AS {store.view_sql(spec)}')
            for statement in derived_statements():
                con.execute(statement)
            con.execute("CREATE OR REPLACE TABLE serlens_meta AS SELECT ? AS schema_version, ? AS log_seq, ? AS root",
                        [SCHEMA_VERSION, state_seq, str(store.root)])
            con.execute("CHECKPOINT")
        finally:
            con.close()
    return True


def open_catalogue(store: FeatureStore) -> duckdb.DuckDBPyConnection:
    """The catalogue opened read-only, its relative file names resolved against the store's folder.

    Its views are rewritten first when a newer commit exists, if the file is free.

    Raises:
        StoreError: no catalogue file yet.
    """
    if not views_current(store):
        try:
            store.refresh_views()
        except StoreError:
            pass  # held by a writer for too long: open what is there
    if not store.db_path.exists():
        raise StoreError(f"no feature store at {store.root} (no {store.db_path.name}); run `serlens run` first")
    con = duckdb.connect(str(store.db_path), read_only=True)
    con.execute("SET file_search_path = ?", [str(store.root)])
    return con
