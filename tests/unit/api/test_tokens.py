"""The token file: digests only, constant-time lookup, scopes, rotation, revocation, bad files."""

from __future__ import annotations

import os
import time

import pytest

from serlens.api.tokens import TokenRegistry, add_token, main, read_token_file, revoke, token_digest
from serlens.shared.errors import InvalidConfigError


def test_the_file_holds_digests_never_tokens(tmp_path):
    path = tmp_path / "tokens.yaml"
    token = add_token(path, name="alice", scopes=["read", "predict"])
    text = path.read_text()
    assert token.startswith("serlens_") and len(token) > 40
    assert token not in text and token_digest(token) in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    (entry,) = read_token_file(path).tokens
    assert (entry.name, entry.scopes) == ("alice", ("read", "predict"))


def test_authenticate_finds_the_caller_and_its_scopes_only(tmp_path):
    path = tmp_path / "tokens.yaml"
    alice = add_token(path, name="alice", scopes=["read"])
    bob = add_token(path, name="bob", scopes=["read", "train"])
    registry = TokenRegistry(path)
    assert registry.authenticate(alice).scopes == frozenset({"read"})
    assert registry.authenticate(bob).name == "bob"
    assert registry.authenticate(alice[:-1]) is None
    assert registry.authenticate("") is None


def test_rotation_and_revocation_are_picked_up_without_restart(tmp_path):
    path = tmp_path / "tokens.yaml"
    alice = add_token(path, name="alice", scopes=["read"])
    registry = TokenRegistry(path, recheck_s=0)
    carol = add_token(path, name="carol", scopes=["predict"])
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, as a Secret update gives
    assert registry.authenticate(carol).name == "carol"
    assert revoke(path, name="alice") == 1
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert registry.authenticate(alice) is None


def test_a_broken_rewrite_keeps_the_last_good_tokens(tmp_path):
    path = tmp_path / "tokens.yaml"
    alice = add_token(path, name="alice", scopes=["read"])
    registry = TokenRegistry(path, recheck_s=0)
    path.write_text("tokens: [{name: x}]\n")
    assert registry.authenticate(alice).name == "alice"


@pytest.mark.parametrize(
    "text",
    [
        "tokens: [{name: a, sha256: xyz, scopes: [read]}]",
        f"tokens: [{{name: a, sha256: {'0' * 64}, scopes: [admin]}}]",
        f"tokens: [{{name: a, sha256: {'0' * 64}, scopes: []}}]",
        f"tokens: [{{name: a, sha256: {'0' * 64}, scopes: [read], token: plain}}]",
        f"tokens: [{{name: a, sha256: {'0' * 64}, scopes: [read]}}, {{name: b, sha256: {'0' * 64}, scopes: [read]}}]",
        "tokens: [",
    ],
)
def test_invalid_files_are_named_errors(tmp_path, text):
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(InvalidConfigError, match="tokens.yaml"):
        TokenRegistry(path)


def test_a_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(InvalidConfigError, match="python -m serlens.api.tokens create"):
        TokenRegistry(tmp_path / "none.yaml")


def test_the_command_creates_lists_and_revokes(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    assert main(["create", "--file", str(path), "--name", "dana", "--scopes", "read,train"]) == 0
    token = capsys.readouterr().out.strip()
    assert TokenRegistry(path).authenticate(token).scopes == frozenset({"read", "train"})
    assert main(["list", "--file", str(path)]) == 0 and "dana\tread,train" in capsys.readouterr().out
    assert main(["create", "--file", str(path), "--name", "eve", "--scopes", "root"]) == 2
    assert main(["revoke", "--file", str(path), "--name", "dana"]) == 0
    assert TokenRegistry(path).authenticate(token) is None


def test_serlens_serve_creates_a_first_token_once(tmp_path):
    from serlens.api.app import first_token
    from serlens.api.config import ApiArgs

    config = ApiArgs(workdir=str(tmp_path)).to_config()
    token = first_token(config)
    assert token and config.tokens_file == tmp_path / "api-tokens.yaml"
    assert TokenRegistry(config.tokens_file).authenticate(token).scopes == frozenset({"read", "predict", "train"})
    assert first_token(config) is None
