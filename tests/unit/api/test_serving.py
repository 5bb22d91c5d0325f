"""One options dict per Serve app, merged with overrides; the shared model cache."""

from __future__ import annotations

import pytest

from serlens.api import app as api_app
from serlens.egemaps import app as egemaps_app
from serlens.embed import app as embed_app
from serlens.embed.service import ModelCache
from serlens.normalize import app as normalize_app
from serlens.predict import app as predict_app
from serlens.shared.errors import InvalidConfigError
from serlens.shared.serving import health_clip, merge_options


def test_nested_options_are_merged_and_inputs_left_alone():
    defaults = {"name": "X", "ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 8}
    merged = merge_options(defaults, {"ray_actor_options": {"num_gpus": 0.5, "memory": 2**30},
                                      "max_ongoing_requests": 4, "num_replicas": None})
    assert merged == {"name": "X", "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.5, "memory": 2**30},
                      "max_ongoing_requests": 4}
    assert defaults["ray_actor_options"] == {"num_cpus": 0.1}


def test_each_app_names_its_deployment_once():
    modules = (api_app, normalize_app, egemaps_app, embed_app, predict_app)
    names = [m.DEPLOYMENT_OPTIONS["name"] for m in modules]
    assert names == ["Ingress", "Normalize", "Egemaps", "Embed", "Predict"]


def test_build_app_applies_the_merged_options():
    application = normalize_app.build_app({}, ray_actor_options={"memory": 2**30}, max_ongoing_requests=3)
    deployment = application._bound_deployment
    assert deployment.name == "Normalize" and deployment.max_ongoing_requests == 3
    assert deployment.ray_actor_options == {"num_cpus": 0.1, "memory": 2**30}


def test_the_cache_loads_once_and_drops_the_least_recently_used():
    loads: list[str] = []
    cache = ModelCache(lambda name: loads.append(name) or name.upper(), size=2)
    assert cache.get("a") == "A" and cache.get("b") == "B" and cache.get("a") == "A"
    cache.get("c")  # drops b, the least recently used
    assert cache.names() == ["a", "c"] and cache.most_recent() == ("c", "C")
    cache.get("b")
    assert loads == ["a", "b", "c", "b"]
    with pytest.raises(InvalidConfigError):
        ModelCache(str, size=0)


def test_the_health_clip_is_short_voiced_and_quiet():
    clip = health_clip(0.5, 16_000)
    assert clip.shape == (8000,) and clip.dtype.name == "float32"
    assert 0.01 < abs(clip).max() < 0.5
