"""Durable file operations of the store: write, fsync, verify, quarantine.

Every byte the store keeps goes through ``write_durable``: a temporary name in the final
folder, the data and the file fsynced, a rename (or, for commit records, a hard link that
fails when the name is taken), then the folder fsynced, so a crash leaves the old state or
the new one. A full disk (``ENOSPC``/``EFBIG``/``EDQUOT``) becomes a ``StoreError`` and the
temporary file is removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serlens.shared.errors import StoreError

#: Errors that mean "no room left": reported as a StoreError, nothing left half-written.
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
QUARANTINE_DIR = "_quarantine"


def fsync_path(path: Path) -> None:
    """Make a file's content, or a folder's entries (a new or renamed file), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parquet_bytes(tbl: pa.Table) -> bytes:
    """A table as the bytes of one zstd-compressed Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(tbl, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_tmp(folder: Path, final_name: str, data: bytes) -> Path:
    tmp = folder / f".{final_name}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_durable(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` so that it is there whole or not at all, and durable.

    Args:
        path: the final name (its folder is created).
        data: the bytes.
        exclusive: fail (return False) instead of replacing an existing ``path``; used
            for commit records, whose names are version numbers.

    Returns:
        True when written; False only when ``exclusive`` and the name was taken.

    Raises:
        StoreError: the disk (or the file system's size limit) is full, or another OS error;
            nothing is left at ``path`` or under a temporary name.
    """
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_tmp(path.parent, path.name, data)
        if exclusive:
            try:
                os.link(tmp, path)  # atomic and never replaces: the name is this writer's or not
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
            tmp = None
        fsync_path(path.parent)
        return True
    except OSError as err:
        if err.errno in _FULL:
            raise StoreError(f"no space left for {path.name} under {path.parent} ({os.strerror(err.errno)}); "
                             "nothing was written") from err
        raise StoreError(f"cannot write {path}: {err}") from err
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def quarantine(root: Path, relative: str) -> Path | None:
    """Move a damaged file out of the tables into ``<root>/_quarantine/`` (same relative path).

    Returns:
        Where it went, or None when it was gone already.
    """
    source = root / relative
    target = root / QUARANTINE_DIR / relative
    if not source.exists():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}")
    try:
        os.replace(source, target)
    except OSError:
        shutil.move(str(source), str(target))
    return target
