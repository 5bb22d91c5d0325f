"""A real ``mlflow server`` on 127.0.0.1 for tests: started, stopped and restarted on one port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` with a backend store URI and a local artifacts folder, on a fixed port."""

    def __init__(self, backend_store_uri: str, artifacts: Path, log_path: Path) -> None:
        self.backend_store_uri, self.artifacts, self.log_path = backend_store_uri, artifacts, log_path
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180) -> None:
        """Start the server and wait until ``/health`` answers."""
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_store_uri,
                   "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", "1"]
        with open(self.log_path, "ab") as log:
            # Its own process group: the server starts worker processes that must stop with it.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server not up in {timeout_s} s: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """Kill the server and its workers at once (SIGKILL): a server that goes away."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
