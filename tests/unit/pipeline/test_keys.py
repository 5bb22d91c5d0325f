"""Stage keys: one recipe, known before any stage runs, shared by the pipeline and the API."""

from __future__ import annotations

from serlens.pipeline.config import load_study_args
from serlens.pipeline.keys import StageKeys
from serlens.shared.keys import config_hash, egemaps_key, normalize_key
from serlens.shared.schema import ClipRecord


def _clips(n: int = 6) -> list[ClipRecord]:
    return [ClipRecord(clip_id=f"c{i}", dataset="d", source_path=f"/c{i}.wav", audio_sha256=f"h{i}",
                       speaker=f"s{i % 3}", gender="F", label="ANG", duration_s=1.0, sampling_rate=16_000)
            for i in range(n)]


def test_keys_depend_on_what_feeds_each_stage_only():
    base = StageKeys.for_study(load_study_args(), _clips())
    lr = StageKeys.for_study(load_study_args(overrides=["train.lr=3e-5"]), _clips())
    assert (lr.norm, lr.data, lr.egemaps) == (base.norm, base.data, base.egemaps)
    assert lr.train != base.train and lr.embed != base.embed
    loud = StageKeys.for_study(load_study_args(overrides=["normalize.target_lufs=-20"]), _clips())
    assert len({loud.norm, base.norm}) == 2 and loud.data != base.data and loud.egemaps != base.egemaps


def test_keys_ignore_clip_order_and_see_content_changes():
    clips = _clips()
    assert StageKeys.for_study(load_study_args(), clips) == StageKeys.for_study(load_study_args(), clips[::-1])
    edited = [*clips[:-1], ClipRecord(**{**clips[-1].__dict__, "audio_sha256": "other"})]
    assert StageKeys.for_study(load_study_args(), edited).data != StageKeys.for_study(load_study_args(), clips).data


def test_the_api_builds_the_pipelines_keys():
    from serlens.api.config import ApiArgs
    from serlens.api.records import Lineage

    args = load_study_args()
    keys = StageKeys.for_study(args, _clips())
    lineage = Lineage.from_config(ApiArgs(normalize=args.normalize, egemaps=args.egemaps).to_config())
    assert (lineage.norm_key, lineage.egemaps_hash) == (keys.norm, keys.egemaps)
    assert keys.norm == normalize_key(args.normalize) and keys.egemaps == egemaps_key(keys.norm, args.egemaps)


def test_config_hash_is_stable_and_order_free():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash("x") != config_hash("y") and len(config_hash("x")) == 16


def test_execution_settings_do_not_change_the_embedding_key():
    base = StageKeys.for_study(load_study_args(), _clips())
    faster = StageKeys.for_study(load_study_args(overrides=["embed.batch_size=4", "embed.fast=false"]), _clips())
    assert faster.embed == base.embed
    other = StageKeys.for_study(load_study_args(overrides=["embed.precision=bf16"]), _clips())
    assert other.embed != base.embed
