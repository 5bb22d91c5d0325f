"""The store's commit log: numbered JSON records under ``<root>/_log/``.

Record ``N`` (``000000000042.json``) lists the data files a commit adds (path relative to
the store root, table, rows, bytes, sha256, the stage transaction it belongs to), the files
it removes (compaction, repair) and the stage transactions it commits. A writer takes the
next number with an exclusive create (a hard link, which fails when the name is taken),
and on a clash reads the log again and takes the one after: writers never overwrite or
abort each other. Every ``SNAPSHOT_EVERY`` records a snapshot of the whole state is written
beside the records, so a reader replays at most that many records.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from serlens.shared.errors import StoreError
from serlens.shared.store.files import write_durable

LOG_DIR = "_log"
SNAPSHOT_EVERY = 25
FORMAT_VERSION = 1
_RECORD = re.compile(r"^(\d{12})\.json$")
_SNAPSHOT = re.compile(r"^(\d{12})\.snapshot\.json$")


@dataclass(frozen=True)
class DataFile:
    """One committed (or pending) Parquet file of a table, as its commit record lists it.

    Attributes:
        path: relative to the store root, with ``/`` (``tables/<table>/<col>=<v>/part-….parquet``).
        table: the table it belongs to.
        rows: its row count.
        bytes: its size in bytes.
        sha256: the hex sha256 of its content.
        txn: the stage transaction that wrote it (``<stage>/<stage key>``), or None.
        committed: whether readers see it (a stage's files wait for the stage's mark).
        array_size: the length of every vector in its table's array column (``TableSpec.array_column``),
            stored as fixed-size arrays; None: no such column, or lengths that differ.
    """

    path: str
    table: str
    rows: int
    bytes: int
    sha256: str
    txn: str | None = None
    committed: bool = True
    array_size: int | None = None

    @property
    def folder(self) -> str:
        """The partition folder, relative to the root."""
        return posixpath.dirname(self.path)


class LogConflict(Exception):
    """A commit's precondition no longer holds (another writer removed its inputs)."""


@dataclass
class Snapshot:
    """The state of the store after record ``seq``: every live file, committed or pending."""

    seq: int = 0
    files: dict[str, DataFile] = field(default_factory=dict)

    def apply(self, record: dict[str, Any]) -> None:
        """Replay one record onto this state."""
        for path in record.get("remove", ()):
            self.files.pop(path, None)
        for entry in record.get("add", ()):
            item = DataFile(**entry)
            self.files[item.path] = item
        commits = set(record.get("commit", ()))
        if commits:
            for path, item in list(self.files.items()):
                if not item.committed and item.txn in commits:
                    self.files[path] = replace(item, committed=True)
        self.seq = int(record["seq"])

    def visible(self, table: str, prefix: str | None = None) -> list[DataFile]:
        """The committed files of a table (under a partition folder prefix), in commit order."""
        return [f for f in self.files.values()
                if f.table == table and f.committed and (prefix is None or f.path.startswith(prefix))]

    def pending(self, txn: str) -> list[DataFile]:
        """The files a stage transaction wrote that are not committed yet."""
        return [f for f in self.files.values() if f.txn == txn and not f.committed]

    def live(self, table: str, prefix: str | None = None) -> list[DataFile]:
        """Committed and pending files of a table."""
        return [f for f in self.files.values() if f.table == table and (prefix is None or f.path.startswith(prefix))]


def _writer() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


class CommitLog:
    """The numbered records of one store (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / LOG_DIR

    def exists(self) -> bool:
        """Whether the log folder exists (a store in the commit-log layout)."""
        return self.dir.is_dir()

    def _names(self) -> tuple[list[int], list[int]]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return [], []
        records = sorted(int(m.group(1)) for n in names if (m := _RECORD.match(n)))
        snapshots = sorted(int(m.group(1)) for n in names if (m := _SNAPSHOT.match(n)))
        return records, snapshots

    def head(self) -> int:
        """The number of the newest record (0: none)."""
        records, _ = self._names()
        return records[-1] if records else 0

    def record_path(self, seq: int) -> Path:
        """Where record ``seq`` lives."""
        return self.dir / f"{seq:012d}.json"

    def read_record(self, seq: int) -> dict[str, Any]:
        """One record, parsed.

        Raises:
            StoreError: the record is unreadable (named).
        """
        path = self.record_path(seq)
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError) as err:
            raise StoreError(f"commit record {path.relative_to(self.root)} is unreadable: {err}; "
                             "run `serlens store check`") from err
        if not isinstance(record, dict) or record.get("seq") != seq:
            raise StoreError(f"commit record {path.relative_to(self.root)} is damaged; run `serlens store check`")
        return record

    def _load_snapshot(self, seq: int) -> Snapshot | None:
        try:
            raw = json.loads((self.dir / f"{seq:012d}.snapshot.json").read_bytes())
            return Snapshot(seq=int(raw["seq"]), files={f["path"]: DataFile(**f) for f in raw["files"]})
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged snapshot is only a shortcut: replay the records instead

    def snapshot(self, upto: int | None = None) -> Snapshot:
        """The state after record ``upto`` (default: the newest).

        Raises:
            StoreError: a record on the way is unreadable.
        """
        records, snapshots = self._names()
        if upto is not None:
            records = [r for r in records if r <= upto]
        state: Snapshot | None = None
        for seq in reversed([s for s in snapshots if not records or s <= records[-1]]):
            state = self._load_snapshot(seq)
            if state is not None:
                break
        state = state or Snapshot()
        for seq in records:
            if seq > state.seq:
                state.apply(self.read_record(seq))
        return state

    def publish(self, *, add: Iterable[DataFile] = (), remove: Iterable[str] = (), commit: Iterable[str] = (),
                check: Callable[[Snapshot], None] | None = None) -> int:
        """Append one record; returns its number.

        Args:
            add: files the commit adds.
            remove: paths (relative) it removes.
            commit: stage transactions whose pending files become visible.
            check: called with the state the record will follow; raises ``LogConflict`` when
                the commit no longer applies (it is then not published).

        Raises:
            LogConflict: from ``check``.
            StoreError: the disk is full or the log folder cannot be written.
        """
        body = {"add": [asdict(f) for f in add], "remove": list(remove), "commit": list(commit)}
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            if check is not None:
                state = self.snapshot()
                check(state)
                seq = state.seq + 1
            else:
                seq = self.head() + 1
            record = {"seq": seq, "format": FORMAT_VERSION, "time": dt.datetime.now(dt.UTC).isoformat(),
                      "writer": _writer(), **body}
            if write_durable(self.record_path(seq), json.dumps(record).encode(), exclusive=True):
                break
        if seq % SNAPSHOT_EVERY == 0:
            self.write_snapshot(self.snapshot(upto=seq))
        return seq

    def write_snapshot(self, state: Snapshot) -> None:
        """Write the state after record ``state.seq`` (a shortcut for readers; any copy is as good)."""
        data = {"seq": state.seq, "files": [asdict(f) for f in state.files.values()]}
        write_durable(self.dir / f"{state.seq:012d}.snapshot.json", json.dumps(data).encode())

    def recent(self, since: dt.datetime) -> Iterator[dict[str, Any]]:
        """Records written at or after ``since``, newest first."""
        records, _ = self._names()
        for seq in reversed(records):
            record = self.read_record(seq)
            if dt.datetime.fromisoformat(record["time"]) < since:
                return
            yield record
