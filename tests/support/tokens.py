"""API tokens for tests: one per caller, written hashed to a token file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from serlens.api.tokens import add_token


def write_tokens(path: Path, callers: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """One token per caller name with its scopes, appended to ``path``; ``{name: token}``."""
    return {name: add_token(path, name=name, scopes=scopes) for name, scopes in callers.items()}
