"""Keeping a store healthy: compaction, ``check``, ``repair`` (and migration from the old layout).

- ``compact_folder`` merges a partition's small committed files into one and publishes a
  single record that removes the old files and adds the new, only if the old ones are all
  still live (optimistic: a concurrent compaction of the same files wins, the other gives
  up). Retired files are stamped with the time they left the log (their mtime) and deleted
  ``GRACE_S`` later, so a reader that listed them just before still finds them.
- ``check`` verifies every live file against its record: present, size, sha256, Parquet
  footer, columns and types; it lists orphans (files no record holds) apart.
- ``repair`` quarantines bad files, removes them from the log together with the stage
  marks of the stages that wrote them (so a rerun recomputes those rows), deletes orphans
  older than ``GRACE_S`` and migrates a store of the previous layout (no log, partition
  columns inside files, a schema marker file per table).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from serlens.shared.errors import StoreError
from serlens.shared.schema import STAGES, all_tables, table
from serlens.shared.store.feature_store import FeatureStore
from serlens.shared.store.files import parquet_bytes, quarantine, sha256_bytes, write_durable
from serlens.shared.store.log import LOG_DIR, DataFile, LogConflict, Snapshot
from serlens.shared.store.tables import damage, file_schema, fixed_arrays, new_file_path

#: Files smaller than this are merged by compaction.
SMALL_FILE_BYTES = 16 * 2**20
#: Seconds a retired or orphaned file is kept before it is deleted (longer than any query).
GRACE_S = 300.0
_MIGRATING = "migrating"


@dataclass
class Problem:
    """A file that does not match its commit record."""

    path: str
    table: str
    reason: str


@dataclass
class CheckReport:
    """What ``check`` found."""

    files: int = 0
    bad: list[Problem] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    needs_migration: bool = False

    @property
    def ok(self) -> bool:
        """Whether every committed file is sound (orphans are harmless: no reader sees them)."""
        return not self.bad and not self.needs_migration


def _write_file(store: FeatureStore, name: str, folder: str, tbl: pa.Table) -> DataFile:
    tbl, size = fixed_arrays(table(name), tbl)
    data = parquet_bytes(tbl)
    item = DataFile(path=new_file_path(folder), table=name, rows=tbl.num_rows, bytes=len(data),
                    sha256=sha256_bytes(data), array_size=size)
    write_durable(store.root / item.path, data)
    return item


def _still_live(paths: Sequence[str]) -> object:
    def check(state: Snapshot) -> None:
        if any(p not in state.files or not state.files[p].committed for p in paths):
            raise LogConflict("another commit retired these files")
    return check


def _retire(store: FeatureStore, paths: Sequence[str]) -> None:
    """Stamp files with the time they leave the log: the grace period counts from it."""
    now = time.time()
    for p in paths:
        try:
            os.utime(store.root / p, (now, now))
        except FileNotFoundError:
            pass


def _publish_replacing(store: FeatureStore, old: Sequence[str], new: Sequence[DataFile]) -> bool:
    _retire(store, old)
    try:
        store.log.publish(add=new, remove=old, check=_still_live(old))  # type: ignore[arg-type]
    except (LogConflict, StoreError):
        for item in new:
            (store.root / item.path).unlink(missing_ok=True)
        return False
    return True


def compact_folder(store: FeatureStore, name: str, folder: str, *, min_files: int = 2,
                   grace_s: float = GRACE_S) -> int:
    """Merge the small committed files of one partition folder into one file (one commit).

    Returns:
        How many files were merged (0: fewer than ``min_files``, or another commit won).
    """
    files = [f for f in store.log.snapshot().visible(name) if f.folder == folder and f.bytes < SMALL_FILE_BYTES]
    if len(files) < min_files:
        return 0
    schema = file_schema(table(name))
    merged = pa.concat_tables([pq.ParquetFile(store.root / f.path).read().cast(schema) for f in files])
    new = _write_file(store, name, folder, merged)
    if not _publish_replacing(store, [f.path for f in files], [new]):
        return 0
    delete_orphans(store, folder=store.root / folder, min_age_s=grace_s)
    return len(files)


def compact(store: FeatureStore, names: Sequence[str] | None = None, *,
            min_files: int = 2) -> dict[str, tuple[int, int]]:
    """Compact every partition of the named tables (default: all).

    Returns:
        ``{table: (files before, files after)}`` for the tables that changed.
    """
    changed: dict[str, tuple[int, int]] = {}
    for name in names or [t.name for t in all_tables()]:
        before = store.log.snapshot().visible(name)
        for folder in sorted({f.folder for f in before}):
            compact_folder(store, name, folder, min_files=min_files)
        after = store.log.snapshot().visible(name)
        if len(after) != len(before):
            changed[name] = (len(before), len(after))
    return changed


def needs_migration(store: FeatureStore) -> bool:
    """Whether the store is in the previous layout (Parquet files but no commit log)."""
    if (store.log.dir / _MIGRATING).exists():
        return True
    return not store.log.exists() and store.tables_dir.is_dir() and \
        any(p for p in store.tables_dir.rglob("*.parquet") if not p.name.startswith("."))


def orphans(store: FeatureStore, state: Snapshot, *, folder: Path | None = None, min_age_s: float = 0.0) -> list[Path]:
    """Files under the tables (or one folder) that no live record holds, untouched for ``min_age_s``."""
    return [path for path in (folder or store.tables_dir).rglob("*")
            if path.relative_to(store.root).as_posix() not in state.files and _untouched_since(path, min_age_s)]


def _untouched_since(path: Path, age_s: float) -> bool:
    """A plain file whose mtime is at least ``age_s`` old (False when it vanished meanwhile)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    return path.is_file() and stat.st_mtime <= time.time() - age_s


def delete_orphans(store: FeatureStore, *, folder: Path | None = None, min_age_s: float = GRACE_S) -> list[str]:
    """Delete files no record holds (crashed writers' leftovers, retired files) past their grace."""
    removed = []
    for path in orphans(store, store.log.snapshot(), folder=folder, min_age_s=min_age_s):
        path.unlink(missing_ok=True)
        removed.append(path.relative_to(store.root).as_posix())
    for path in store.log.dir.glob(".*.tmp"):
        if _untouched_since(path, min_age_s):
            path.unlink(missing_ok=True)
    return removed


def check(store: FeatureStore) -> CheckReport:
    """Verify every live file against its commit record and its table's schema.

    Raises:
        StoreError: a commit record itself is unreadable (named).
    """
    if needs_migration(store):
        return CheckReport(needs_migration=True)
    state = store.log.snapshot()
    report = CheckReport(files=len(state.files))
    for item in state.files.values():
        reason = damage(store.root, table(item.table), item)
        if reason:
            report.bad.append(Problem(item.path, item.table, reason))
    report.orphans = [p.relative_to(store.root).as_posix() for p in orphans(store, state)]
    return report


def _unmark(store: FeatureStore, state: Snapshot, txns: set[str]) -> tuple[list[str], list[DataFile]]:
    """Rewrite the stage records without the marks of ``txns``: ``(removed paths, added files)``."""
    removed: list[str] = []
    added: list[DataFile] = []
    for item in state.visible(STAGES.name):
        path = store.root / item.path
        if not path.exists():
            continue
        rows = pq.ParquetFile(path).read()
        keys = pc.binary_join_element_wise(rows.column("stage"), rows.column("stage_key"), "/")
        keep = pc.invert(pc.is_in(keys, pa.array(sorted(txns), pa.string())))
        if pc.all(keep).as_py():
            continue
        removed.append(item.path)
        if pc.any(keep).as_py():
            added.append(_write_file(store, STAGES.name, item.folder, rows.filter(keep)))
    return removed, added


def repair(store: FeatureStore, *, orphan_age_s: float = GRACE_S) -> dict[str, list[str]]:
    """Quarantine damaged files, drop them (and their stages' marks) from the log, delete orphans.

    Returns:
        ``{"migrated": tables, "quarantined": files, "unmarked": stage transactions, "orphans": files}``.
    """
    done: dict[str, list[str]] = {"migrated": migrate(store) if needs_migration(store) else []}
    state = store.log.snapshot()
    bad = [item for item in state.files.values() if damage(store.root, table(item.table), item)]
    txns = {item.txn for item in bad if item.txn}
    for item in bad:
        quarantine(store.root, item.path)
    removed, added = _unmark(store, state, txns) if txns else ([], [])
    if bad or removed:
        gone = [item.path for item in bad]
        store.log.publish(add=added, remove=sorted({*gone, *removed}))
    done["quarantined"] = [item.path for item in bad]
    done["unmarked"] = sorted(txns)
    done["orphans"] = delete_orphans(store, min_age_s=orphan_age_s)
    return done


def migrate(store: FeatureStore) -> list[str]:
    """Move a store of the previous layout into the commit log (one commit per table).

    Each table's old files are read (partition columns inside, a schema marker file), their
    rows written as new files of this layout and committed, then the old files deleted. A
    crash midway leaves a ``_log/migrating`` marker, and the next ``repair`` carries on.
    """
    store.log.dir.mkdir(parents=True, exist_ok=True)
    marker = store.log.dir / _MIGRATING
    write_durable(marker, b"previous layout being moved into the commit log\n")
    migrated = []
    for spec in all_tables():
        folder = store.tables_dir / spec.name
        live = set(store.log.snapshot().files)
        old = [p for p in sorted(folder.rglob("*.parquet")) if not p.name.startswith(".")
               and p.relative_to(store.root).as_posix() not in live] if folder.is_dir() else []
        if not old:
            continue
        if not store.log.snapshot().visible(spec.name):
            parts = [pq.ParquetFile(p).read() for p in old]
            rows = pa.concat_tables([t.select([c for c in spec.schema.names if c in t.column_names]) for t in parts],
                                    promote_options="permissive")
            if rows.num_rows:
                store.write(spec.name, rows, config_hash="")
        for p in old:
            p.unlink()
        migrated.append(spec.name)
    marker.unlink()
    return migrated


__all__ = ["GRACE_S", "LOG_DIR", "CheckReport", "Problem", "check", "compact", "compact_folder",
           "delete_orphans", "migrate", "needs_migration", "repair"]
