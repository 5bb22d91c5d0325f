"""Provenance: what a run ran on, recorded when it runs."""

from __future__ import annotations

from serlens.shared.provenance import collect, git_commit, hardware, model_fingerprint, package_versions


def test_versions_hardware_and_commit():
    versions = package_versions()
    assert versions["serlens"] and versions["torch"] and versions["python"]
    info = hardware()
    assert info["cpus"] >= 1 and info["cpu"]
    commit = git_commit()
    assert commit is None or len(commit.split("+")[0]) == 40


def test_the_fingerprint_follows_the_weights(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    first = model_fingerprint(str(folder), None)["fingerprint"]
    (folder / "model.safetensors").write_bytes(b"\1" + b"\0" * 4095)
    assert model_fingerprint(str(folder), None)["fingerprint"] != first
    assert "fingerprint" not in model_fingerprint("microsoft/wavlm-large", "main")


def test_collect_has_every_part(tmp_path):
    record = collect(model=str(tmp_path), revision=None, cluster={"CPU": 2.0})
    assert set(record) == {"packages", "git_commit", "driver_host", "cluster_resources", "model"}
