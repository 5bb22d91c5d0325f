"""The catalogue's lock: a folder (mkdir is atomic on network file systems too), with an owner."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from serlens.shared.errors import StoreError
from serlens.shared.store.catalog import folder_lock


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lock_left_by_a_dead_process_is_broken(tmp_path):
    lock = tmp_path / "serlens.duckdb.lock"
    lock.mkdir()
    (lock / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid()}))
    with folder_lock(lock, wait_s=5):
        assert json.loads((lock / "owner.json").read_text())["pid"] != 0
    assert not lock.exists()


def test_a_live_owner_is_waited_for_then_named(tmp_path):
    lock = tmp_path / "serlens.duckdb.lock"
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with folder_lock(lock):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    try:
        with pytest.raises(StoreError, match=r"held by pid \d+"), folder_lock(lock, wait_s=0.3):
            pass
        started = time.monotonic()
        threading.Timer(0.3, release.set).start()
        with folder_lock(lock, wait_s=5):  # the second writer waits its turn instead of failing
            assert time.monotonic() - started >= 0.25
    finally:
        release.set()
        holder.join()


def test_a_lock_older_than_its_expiry_is_broken(tmp_path):
    lock = tmp_path / "serlens.duckdb.lock"
    lock.mkdir()
    (lock / "owner.json").write_text(json.dumps({"host": "another-host", "pid": 1}))
    with pytest.raises(StoreError):
        with folder_lock(lock, wait_s=0.2, stale_s=60):
            pass
    with folder_lock(lock, wait_s=2, stale_s=0.0):
        pass
