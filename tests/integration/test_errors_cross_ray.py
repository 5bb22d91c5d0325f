"""A serlens error raised in a Ray task or actor reaches the driver named, with its message."""

from __future__ import annotations

import pytest
import ray

from serlens.shared.errors import InvalidInputError, StoreError, unwrap

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@ray.remote
def _fails() -> None:
    raise InvalidInputError([("NEU", "2 clip(s); a (0.8, 0.1, 0.1) split needs at least 3 per class")],
                            source="probe split")


@ray.remote
class _Actor:
    def fail(self) -> None:
        raise StoreError("cannot write views into store/serlens.duckdb")


def test_task_error_arrives_named(local_ray):
    with pytest.raises(Exception) as info:
        ray.get(_fails.remote())
    named = unwrap(info.value)
    assert type(named) is InvalidInputError
    assert named.problems == [("NEU", "2 clip(s); a (0.8, 0.1, 0.1) split needs at least 3 per class")]
    assert str(named).startswith("1 invalid item(s) in probe split:")
    assert "Traceback" not in str(named)


def test_actor_error_arrives_named(local_ray):
    actor = _Actor.remote()
    with pytest.raises(Exception) as info:
        ray.get(actor.fail.remote())
    named = unwrap(info.value)
    assert type(named) is StoreError and str(named) == "cannot write views into store/serlens.duckdb"
