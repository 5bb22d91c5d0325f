"""Session fixtures of the integration tests: a small workdir and one local Ray + Serve.

The workdir (``tests/support/demo_workdir.py``) holds what `serlens run` would leave behind, in
miniature: checkpoints 0 and 10 of a tiny random WavLM with different weights, their rows in
the ``checkpoints`` table, and a few ``cka`` and ``probes`` rows.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from support.demo_workdir import DEMO_MODEL_NAME, write_demo_workdir

TRAIN_KEY = "testrun0000000001"
STEPS = (0, 10)
MODEL_NAME = DEMO_MODEL_NAME

#: Settings of the API under test: small limits keep the bad-upload cases cheap.
API_ARGS = {
    "max_upload_mb": 3,
    "max_duration_s": 60,
    "sql_max_rows": 1000,
    "sql_timeout_s": 2,
    "embed_max_batch_size": 8,
    "embed_batch_wait_timeout_s": 0.1,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_workdir(
        tmp_path_factory.mktemp("serlens-work"), train_key=TRAIN_KEY, steps=STEPS
    )


@pytest.fixture(scope="session")
def api(workdir: Path):
    """The API on a local Ray (with its job service) and Serve; yields its base URL."""
    import ray
    from ray import serve

    from serlens.api.app import start_app

    try:
        # 4 logical CPUs on 2 cores: room for the deployments beside a `serlens train` job.
        url = start_app({"workdir": str(workdir), **API_ARGS}, port=free_port(), num_cpus=4,
                        dashboard_port=free_port())
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not answer /healthz within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
