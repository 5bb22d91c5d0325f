"""A throwaway PostgreSQL server for tests: ``initdb`` in a temporary folder, started and stopped.

As root (CI containers), the server runs as the ``postgres`` system user, since PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from support.mlflow_server import free_port


def find_bin(name: str) -> str | None:
    """A PostgreSQL program on PATH or in Debian's versioned folder, or None."""
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


class PostgresServer:
    """One PostgreSQL cluster on 127.0.0.1, with trust authentication for user ``serlens``."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="serlens-pg-"))
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=300)

    def start(self) -> str:
        """Create the cluster and a database ``mlflow``; return its SQLAlchemy URI."""
        data = self.folder / "data"
        self._run(find_bin("initdb") or "initdb", "-D", str(data), "-A", "trust", "-U", "serlens")
        self._run(find_bin("pg_ctl") or "pg_ctl", "-D", str(data), "-l", str(self.folder / "log"), "-w", "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.folder}", "start")
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="serlens", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE mlflow")
        connection.close()
        return f"postgresql+psycopg2://serlens@127.0.0.1:{self.port}/mlflow"

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        if (self.folder / "data" / "postmaster.pid").exists():
            self._run(find_bin("pg_ctl") or "pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
