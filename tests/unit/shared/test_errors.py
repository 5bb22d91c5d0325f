"""Every serlens error survives pickling (so it crosses Ray) and keeps its message and fields."""

from __future__ import annotations

import inspect
import pickle

import pytest

from serlens.shared import errors

ALL = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.ServiceError)]


def _instance(cls: type[errors.ServiceError]) -> errors.ServiceError:
    if issubclass(cls, errors.InvalidInputError):
        return cls([("a.wav", "silent"), ("b.wav", "shorter than 400 ms")], source="dataset 'x'")
    return cls(f"{cls.__name__} happened")


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_survives_pickling(cls):
    err = _instance(cls)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.to_dict() == err.to_dict()
    assert back.http_status == err.http_status


def test_problems_and_source_survive():
    err = errors.InvalidManifestError([("c.wav", "unknown label 'XXX'")], source="manifest m.csv")
    back = pickle.loads(pickle.dumps(err))
    assert back.problems == [("c.wav", "unknown label 'XXX'")] and back.source == "manifest m.csv"
    assert "--skip-invalid" in str(back)


def test_unwrap_finds_the_cause_behind_wrappers():
    inner = errors.StoreError("the store is locked")

    class Wrapper(Exception):
        def __init__(self, cause):
            super().__init__("wrapped: long traceback text")
            self.cause = cause

    assert errors.unwrap(Wrapper(inner)) is inner
    try:
        try:
            raise inner
        except errors.StoreError as err:
            raise RuntimeError("context") from err
    except RuntimeError as outer:
        assert errors.unwrap(outer) is inner
    assert errors.unwrap(ValueError("not ours")) is None
