"""`serlens store check|repair|compact|views`: keep the feature store healthy."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def add_store_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                     common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``serlens store ...`` (``common`` adds --workdir and --verbose)."""
    p = sub.add_parser("store", help="check, repair or compact the feature store")
    p.add_argument("action", choices=("check", "repair", "compact", "views"),
                   help="check: verify every file against its commit record (exit 2 when any is bad); "
                        "repair: quarantine bad files, drop their rows and stage marks, delete orphans, "
                        "migrate a store of the previous layout; compact: merge small files; "
                        "views: rewrite the DuckDB catalogue's views")
    p.add_argument("--table", action="append", default=None, help="compact only this table (repeatable)")
    p.add_argument("--orphan-age-s", type=float, default=None,
                   help="repair: delete files no commit holds once untouched this long (default 300)")
    common(p)


def run_store(args: argparse.Namespace, workdir: Path) -> int:
    """Run one ``serlens store`` action; 2 when ``check`` finds damage or an old layout."""
    from serlens.shared.store import maintenance
    from serlens.shared.workdir import Workdir

    store = Workdir(workdir).store
    if args.action == "check":
        report = maintenance.check(store)
        if report.needs_migration:
            print(f"{store.root}: previous layout (no commit log); run `serlens store repair` to migrate it")
            return 2
        for problem in report.bad:
            print(f"bad: {problem.path}: {problem.reason}")
        for orphan in report.orphans:
            print(f"orphan (no commit holds it; `serlens store repair` deletes it): {orphan}")
        print(f"{report.files} committed file(s), {len(report.bad)} bad, {len(report.orphans)} orphan(s)")
        return 0 if report.ok else 2
    if args.action == "repair":
        age = maintenance.GRACE_S if args.orphan_age_s is None else args.orphan_age_s
        done = maintenance.repair(store, orphan_age_s=age)
        for what, items in done.items():
            print(f"{what}: {len(items)}" + (f" ({', '.join(items)})" if items else ""))
        store.refresh_views()
        return 0
    if args.action == "compact":
        changed = maintenance.compact(store, args.table)
        for name, (before, after) in changed.items():
            print(f"{name}: {before} -> {after} file(s)")
        print("nothing to compact" if not changed else "compacted")
        store.refresh_views()
        return 0
    written = store.refresh_views()
    print(f"views {'written' if written else 'not written: a reader holds the file'}: {store.db_path}")
    return 0
