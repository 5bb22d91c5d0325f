"""The store under real faults: writers killed with SIGKILL mid-write, many writer processes at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from support.store_rows import store_cli

from serlens.shared.store import FeatureStore, run_readonly_query

_WRITER = """
import sys
sys.path.insert(0, {tests!r})
from serlens.shared.store import FeatureStore
from serlens.shared.store import maintenance
from support.store_rows import clip
store = FeatureStore(sys.argv[1])
name, count, batch = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print("ready", flush=True)
for i in range(count):
    rows = [clip(i * batch + j, dataset=f"{{name}}-{{j % 2}}") for j in range(batch)]
    store.write("clips", rows, config_hash=name, stage="prepare" if name.startswith("stage") else None)
    if name.startswith("compact") and i % 5 == 4:
        maintenance.compact(store, ["clips"])
    if name.startswith("views") and i % 5 == 4:
        store.refresh_views()
"""


def _writer(root, name: str, count: int, batch: int) -> subprocess.Popen[str]:
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = [str(root), name, str(count), str(batch)]
    return subprocess.Popen([sys.executable, "-c", _WRITER.format(tests=tests), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_writers_killed_mid_write_leave_the_old_or_the_new_state(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    batch = 7
    for round_ in range(4):
        writer = _writer(store.root, f"w{round_}", 10_000, batch)
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(0.4 + 0.3 * round_)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        # Every commit whole: rows per writer a multiple of its batch, each row once.
        rows = store.read("clips", filters={"config_hash": f"w{round_}"})
        assert rows.num_rows % batch == 0
        assert len(set(rows.column("clip_id").to_pylist())) == rows.num_rows
        code, out = store_cli(tmp_path, "check")
        assert code == 0, out
    assert store_cli(tmp_path, "repair", "--orphan-age-s", "0")[0] == 0
    code, out = store_cli(tmp_path, "check")
    assert code == 0 and "0 orphan(s)" in out and "0 bad" in out


def test_a_stage_killed_before_its_mark_stays_invisible_and_resumes(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    writer = _writer(store.root, "stage", 10_000, 3)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert store.read("clips").num_rows == 0
    assert run_readonly_query(store, "SELECT count(*) FROM clips")[1] == [(0,)]
    pending = store.pending_rows("prepare", "stage")
    assert pending > 0 and store_cli(tmp_path, "check")[0] == 0
    store.mark_stage("prepare", "stage", rows=pending, seconds=1.0)
    assert store.read("clips").num_rows == pending


def test_concurrent_writers_compactors_and_view_refreshes_never_abort_each_other(tmp_path):
    store = FeatureStore(tmp_path / "store").init()
    names = ["plain-a", "plain-b", "compact-a", "compact-b", "views-a", "views-b"]
    writers = [_writer(store.root, name, 25, 2) for name in names]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    for name in names:
        assert store.read("clips", filters={"config_hash": name}).num_rows == 50
    records = sorted(int(p.name[:12]) for p in store.log.dir.glob("*.json") if p.name[:12].isdigit()
                     and not p.name.endswith("snapshot.json"))
    assert records == list(range(1, len(records) + 1))  # one sequence, no record lost or overwritten
    assert all(json.loads(store.log.record_path(n).read_text())["seq"] == n for n in records)
    code, out = store_cli(tmp_path, "check")
    assert code == 0, out
