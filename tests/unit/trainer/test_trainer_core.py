import math
from dataclasses import FrozenInstanceError

import numpy as np
import pydantic
import pytest

from serlens.shared.errors import InvalidConfigError
from serlens.shared.workdir import checkpoint_dirname, checkpoint_step
from serlens.trainer import core
from serlens.trainer.config import TrainArgs, TrainConfig


def test_paper_step_arithmetic():
    # CREMA-D subset 1: 4,662 clips, 16 x 8 = 128 per step -> 36.4 -> 37 steps, however it is split.
    steps = core.optimizer_steps_per_epoch(4662, 16, 8)
    assert core.optimizer_steps_per_epoch(4662, 32, 4) == core.optimizer_steps_per_epoch(4662, 128, 1) == steps
    assert steps == 37
    assert core.epoch_at(350, steps) == pytest.approx(9.46, abs=0.01)
    # 50 epochs at most -> 1,850 steps; a checkpoint every 50 steps lands on it.
    assert 50 * steps == 1850


@pytest.mark.parametrize(
    ("clips", "batch", "accum", "expected"),
    [
        (18, 4, 2, 3),  # 5 micro-batches (last of 2 clips) -> steps of 2, 2, 1
        (16, 4, 2, 2),
        (1, 16, 8, 1),
        (17, 16, 1, 2),
    ],
)
def test_steps_per_epoch_small(clips, batch, accum, expected):
    assert core.optimizer_steps_per_epoch(clips, batch, accum) == expected


@pytest.mark.parametrize("args", [(0, 16, 8), (10, 0, 8), (10, 16, 0)])
def test_steps_per_epoch_refuses_non_positive(args):
    with pytest.raises(InvalidConfigError):
        core.optimizer_steps_per_epoch(*args)


def test_early_stopping_by_hand():
    early = core.EarlyStopping(patience=3, min_delta=0.025)
    assert early.update(1.00, step=10) is False and early.best == 1.00 and early.best_step == 10
    assert (
        early.update(0.99, step=20) is False and early.bad_updates == 1
    )  # 0.01 < 0.025: no improvement
    assert early.best == 1.00  # best only moves on a real improvement
    assert (
        early.update(0.97, step=30) is False and early.bad_updates == 0
    )  # 0.03 below best: improvement
    assert early.best == 0.97 and early.best_step == 30
    assert early.update(0.96) is False
    assert early.update(1.50) is False
    assert (
        early.update(0.9451) is True
    )  # third without a 0.025 drop below 0.97 (0.9450 would be one)
    assert early.stopped


def test_early_stopping_exact_delta_and_nan():
    early = core.EarlyStopping(patience=1, min_delta=0.5)
    assert early.update(2.0) is False
    assert early.update(1.5) is True  # exactly min_delta is not "at least more than" the threshold
    nan_case = core.EarlyStopping(patience=2, min_delta=0.0)
    assert nan_case.update(float("nan")) is False
    assert nan_case.update(float("nan")) is True


def test_early_stopping_state_round_trip():
    early = core.EarlyStopping(patience=5, min_delta=0.025)
    for value in (1.0, 0.9, 0.95, 0.93):
        early.update(value)
    restored = core.EarlyStopping(patience=5, min_delta=0.025)
    restored.load_state_dict(early.state_dict())
    assert restored.state_dict() == early.state_dict()
    assert [restored.update(v) for v in (0.9, 0.9, 0.9)] == [
        early.update(v) for v in (0.9, 0.9, 0.9)
    ]
    # A resumed fit with a smaller patience stops as soon as the counter reaches it.
    stricter = core.EarlyStopping(patience=2, min_delta=0.025)
    stricter.load_state_dict(early.state_dict())
    assert stricter.stopped


@pytest.mark.parametrize(("patience", "delta"), [(0, 0.1), (1, -0.1)])
def test_early_stopping_refuses_bad_settings(patience, delta):
    with pytest.raises(InvalidConfigError):
        core.EarlyStopping(patience=patience, min_delta=delta)


def test_epoch_steps_cover_every_clip_once_and_follow_the_seed():
    lengths = list(range(100, 137))
    steps = core.epoch_steps(lengths, 10, seed=3, epoch=0)
    flat = [i for s in steps for i in s]
    assert sorted(flat) == list(range(37))
    assert [len(s) for s in steps] == [10, 10, 10, 7]
    assert len(steps) == core.optimizer_steps_per_epoch(37, 5, 2)
    assert steps == core.epoch_steps(lengths, 10, seed=3, epoch=0)
    assert steps != core.epoch_steps(lengths, 10, seed=3, epoch=1)
    assert steps != core.epoch_steps(lengths, 10, seed=4, epoch=0)
    assert flat != list(range(37))  # shuffled


def test_same_effective_batch_same_steps_whatever_the_split():
    lengths = np.random.default_rng(1).integers(8_000, 80_000, size=300).tolist()
    steps = core.epoch_steps(lengths, 128, seed=0, epoch=2)
    for micro in (1, 16, 32, 100, 128):
        for bucket in (False, True):
            for step in steps:
                batches = core.micro_batches(step, micro, lengths, bucket_by_length=bucket)
                assert sorted(i for b in batches for i in b) == sorted(step)
                assert all(len(b) <= micro for b in batches) and len(batches) == -(-len(step) // micro)
    # Without bucketing the micro-batches are the step's clips in order (as before the split existed).
    assert core.micro_batches([5, 3, 9, 1, 7], 2, lengths) == [[5, 3], [9, 1], [7]]


def test_length_bucketing_reduces_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(8_000, 80_000, size=400).tolist()

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    steps = core.epoch_steps(lengths, 128, seed=0, epoch=0)
    plain = [b for s in steps for b in core.micro_batches(s, 16, lengths)]
    bucketed = [b for s in steps for b in core.micro_batches(s, 16, lengths, bucket_by_length=True)]
    assert sorted(i for b in bucketed for i in b) == list(range(400))
    assert padding(bucketed) < 0.2 * padding(plain)
    # Each micro-batch holds clips of neighbouring lengths within its step.
    for step in steps:
        batches = core.micro_batches(step, 16, lengths, bucket_by_length=True)
        ranges = [(min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches]
        assert all(high <= low for (_, high), (low, _) in zip(ranges, ranges[1:], strict=False))


def test_classification_scores_by_hand():
    scores = core.classification_scores([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], num_classes=3)
    # class 0: P 1/2 R 1/2 F 0.5; class 1: P 2/3 R 1 F 0.8; class 2: P 1 R 1/2 F 2/3.
    assert scores["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # A class that never occurs counts as F1 0 in the macro average.
    assert core.classification_scores([0, 1], [0, 1], num_classes=4)["f1_macro"] == pytest.approx(
        0.5
    )
    with pytest.raises(InvalidConfigError):
        core.classification_scores([0, 1], [0], num_classes=2)


def test_checkpoint_names():
    assert checkpoint_dirname(0) == "step-000000"
    assert checkpoint_dirname(50) == "step-000050"
    assert checkpoint_step("step-000350") == 350
    assert checkpoint_step(checkpoint_dirname(1_234_567)) == 1_234_567
    assert (
        checkpoint_step(".step-000050.tmp") is None and checkpoint_step("step-5") is None
    )
    with pytest.raises(InvalidConfigError):
        checkpoint_dirname(-1)


def test_train_args_paper_defaults_and_validation():
    config = TrainArgs().to_config()
    assert isinstance(config, TrainConfig)
    assert (config.batch_size, config.grad_accum_steps, config.effective_batch_size) == (16, 8, 128)
    assert config.lr == 1e-5 and config.weight_decay == 0.01
    assert (config.max_epochs, config.max_steps) == (50, None)
    assert (config.eval_every_steps, config.checkpoint_every_steps) == (10, 50)
    assert (config.early_stopping_patience, config.early_stopping_min_delta) == (5, 0.025)
    assert config.freeze_feature_encoder and config.device == "auto" and config.precision == "auto"
    assert config.to_dict()["seed"] == 0
    with pytest.raises(FrozenInstanceError):
        config.lr = 1.0
    with pytest.raises(pydantic.ValidationError, match="extra"):
        TrainArgs(learning_rate=1e-4)
    for bad in (
        {"batch_size": 0},
        {"lr": 0},
        {"device": "tpu"},
        {"precision": "fp16"},
        {"max_steps": 0},
    ):
        with pytest.raises(pydantic.ValidationError):
            TrainArgs(**bad)
    assert math.isclose(TrainArgs(lr=5e-4).to_config().lr, 5e-4)
