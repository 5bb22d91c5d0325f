"""The feature store: Parquet files under one root, made visible by commit records.

This package is the only code that writes Parquet or opens DuckDB.

Layout (a workdir may be moved or copied: the log, the views and the rows name the workdir's
files relative to it; only a clip's original ``source_path`` is kept as given)::

    <root>/tables/<table>/[<col>=<value>/...]part-<utc>-<uuid>.parquet   rows; partition columns
                                                  only in folder names (hive style)
    <root>/_log/000000000042.json                 commit record 42
    <root>/_log/000000000100.snapshot.json        the whole state after record 100 (every 25th)
    <root>/_quarantine/...                        damaged files, moved out of the tables
    <root>/serlens.duckdb                         views for users' own DuckDB clients (file names
                                                  relative to <root>: ``file_search_path``)

Commit protocol (in the spirit of Delta Lake and Iceberg):

1. A write turns rows into one Parquet file per partition, each written under a temporary
   name, fsynced, renamed into place and its folder fsynced (``files.write_durable``).
2. It then publishes one commit record listing those files (path relative to the root,
   rows, bytes, sha256, the stage transaction if any): JSON written to a temporary file,
   fsynced, hard-linked to the next free number (the link fails if another writer took
   that number; the writer reads the log again and takes the one after), folder fsynced.
   A crash before the link leaves files that no record names: invisible orphans, deleted
   by ``serlens store repair`` (and by compaction) after ``maintenance.GRACE_S``.
3. Readers (``FeatureStore.read``, the SQL sandbox, the catalogue's views) read the files
   of the newest state (last snapshot + later records), never a glob of the folders.
4. A stage's workers write with ``stage=...``: their files are in the log but pending,
   invisible to readers, visible to ``keys_present`` (so a rerun after a crash skips them).
   ``mark_stage`` publishes the stage's row and commits the stage's pending files in one
   record: readers see all of a stage or none of it. Rows are kept newest per key
   (``dedupe_sql``), so rows written twice by a resumed stage show once.
5. Compaction publishes one record that removes a partition's small files and adds their
   merge, only if they are all still live (optimistic concurrency).
6. Damage (a file whose size, sha256, footer or schema disagrees with its record) is
   detected on read (size, and the checks on any read error) or by ``serlens store check``;
   the file is moved to ``_quarantine/`` and named in a ``StoreError``; ``repair`` removes
   it from the log together with the marks of the stages that wrote it.
"""

from serlens.shared.store.feature_store import DB_FILENAME, FeatureStore, stage_txn
from serlens.shared.store.query import run_readonly_query
from serlens.shared.store.tables import utc_now

__all__ = ["DB_FILENAME", "FeatureStore", "run_readonly_query", "stage_txn", "utc_now"]
