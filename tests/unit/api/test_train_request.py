"""What POST /train may ask for, and the key that makes identical requests one run."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from serlens.api.config import ApiArgs
from serlens.api.train_request import TrainRequest, prepare_config
from serlens.shared.errors import InvalidInputError


@pytest.fixture
def config(tmp_path):
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({"dataset": {"kind": "demo", "demo_speakers": 12}, "train": {"max_steps": 3}}))
    return ApiArgs(workdir=str(tmp_path / "work"), train_datasets={"tiny": str(tiny)}).to_config()


def test_hyperparameters_go_over_the_operators_config(config):
    path, key = prepare_config(TrainRequest(dataset="tiny", train={"lr": 2e-4, "seed": 3}), config)
    written = yaml.safe_load(path.read_text())
    assert path.parent == config.paths.train_requests and path.stem == key
    assert written["train"]["lr"] == 2e-4 and written["train"]["seed"] == 3
    assert written["train"]["max_steps"] == 3  # the operator's value, not overridden
    assert written["dataset"]["demo_speakers"] == 12 and written["tracking"]["uri"] is None


def test_identical_requests_share_a_key_and_different_ones_do_not(config):
    first = prepare_config(TrainRequest(dataset="tiny", train={"seed": 1}), config)[1]
    assert prepare_config(TrainRequest(dataset="tiny", train={"seed": 1}), config)[1] == first
    assert prepare_config(TrainRequest(dataset="tiny", train={"seed": 2}), config)[1] != first


@pytest.mark.parametrize(
    "body",
    [
        {"dataset": "tiny", "model": {"name": "/srv/models"}},
        {"dataset": "tiny", "tracking": {"uri": "http://elsewhere"}},
        {"dataset": "tiny", "train": {"device": "cuda"}},
        {"dataset": "tiny", "train": {"num_loader_workers": 64}},
        {"dataset": "tiny", "train": {"lr": 1.0}},
        {"dataset": "tiny", "train": {"max_steps": 10**9}},
        {"dataset": "tiny", "train": {"batch_size": 0}},
        {"dataset": "../tiny"},
        {"dataset": "x" * 65},
    ],
)
def test_anything_but_bounded_hyperparameters_and_a_name_is_refused(body):
    with pytest.raises(ValidationError):
        TrainRequest.model_validate(body)


def test_a_dataset_not_on_the_allow_list_is_422(config):
    with pytest.raises(InvalidInputError, match="not offered") as caught:
        prepare_config(TrainRequest(dataset="crema-d"), config)
    assert caught.value.http_status == 422
