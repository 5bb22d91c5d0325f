"""Fixtures of the API unit tests: a miniature workdir, callers' tokens, the FastAPI app in-process.

The app is the real ``create_app`` over a real store and token file; the deployment handles are
absent (``None``): these tests stay on the routes that need none (auth, results, SQL, training
admission before a job is submitted, promotion).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from support.demo_workdir import write_demo_workdir
from support.tokens import write_tokens

from serlens.api.config import ApiArgs
from serlens.api.routes import IngressState, create_app

TRAIN_KEY = "unitrun0000000001"
CALLERS = {"reader": ["read"], "listener": ["read", "predict"], "trainer": ["read", "train"]}


@pytest.fixture(scope="session")
def api_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_workdir(tmp_path_factory.mktemp("api-work"), train_key=TRAIN_KEY, steps=(0, 10))


@pytest.fixture(scope="session")
def tokens(api_workdir: Path) -> dict[str, str]:
    return write_tokens(api_workdir / "api-tokens.yaml", CALLERS)


@pytest.fixture(scope="session")
def state(api_workdir: Path, tokens: dict[str, str]) -> IngressState:
    tiny = api_workdir / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({"dataset": {"kind": "demo", "demo_speakers": 12}}))
    config = ApiArgs(workdir=str(api_workdir), train_datasets={"tiny": str(tiny)}).to_config()
    return IngressState(config=config, normalize=None, egemaps=None, embed=None, predict=None)


@pytest.fixture(scope="session")
def app_client(state: IngressState):
    with TestClient(create_app(state)) as client:
        yield client


@pytest.fixture
def as_caller(app_client: TestClient, tokens: dict[str, str]):
    """``as_caller(name)``: request headers with that caller's token."""
    return lambda name: {"Authorization": f"Bearer {tokens[name]}"}
