"""Health checks that can fail: a forward pass, the extractor, the normaliser, a store query."""

from __future__ import annotations

import asyncio

import pytest
import torch

from serlens.api.app import Ingress
from serlens.egemaps.app import EgemapsDeployment
from serlens.embed.app import EmbedDeployment
from serlens.normalize.app import NormalizeDeployment
from serlens.predict.app import PredictDeployment
from serlens.shared.workdir import Workdir
from tests.unit.api.conftest import TRAIN_KEY


@pytest.fixture
def folder(api_workdir) -> str:
    return str(Workdir(api_workdir).checkpoint_dir(TRAIN_KEY, 0))


def poison(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))


def test_predict_health_runs_a_forward_pass_and_fails_on_broken_weights(folder):
    deployment = PredictDeployment({"device": "cpu"}, preload=folder)
    assert asyncio.run(deployment.check_health()) is None
    poison(deployment.models.get(folder).model.head)
    with pytest.raises(RuntimeError, match="summing to nan"):
        asyncio.run(deployment.check_health())


def test_embed_health_runs_a_forward_pass_and_fails_on_broken_weights(folder):
    deployment = EmbedDeployment({"device": "cpu"}, preload=folder)
    assert asyncio.run(deployment.check_health()) is None
    poison(deployment.models.get(folder).model)
    with pytest.raises(RuntimeError, match="non-finite"):
        asyncio.run(deployment.check_health())


def test_with_no_model_loaded_there_is_nothing_to_check():
    assert asyncio.run(PredictDeployment({}).check_health()) is None


def test_normalize_and_egemaps_health_run_the_real_services():
    assert asyncio.run(NormalizeDeployment({}).check_health()) is None
    assert asyncio.run(EgemapsDeployment({}).check_health()) is None


def test_ingress_health_fails_when_the_store_cannot_answer(tmp_path, api_workdir, tokens):
    import shutil

    workdir = tmp_path / "work"
    shutil.copytree(api_workdir, workdir)
    ingress = Ingress({"workdir": str(workdir)}, None, None, None, None)  # type: ignore[arg-type]
    assert asyncio.run(ingress.check_health()) is None
    for part in (workdir / "store" / "tables" / "checkpoints").rglob("*.parquet"):
        part.write_bytes(b"not parquet")
    with pytest.raises(Exception, match="(?i)parquet|invalid|magic"):
        asyncio.run(ingress.check_health())
