"""API tokens: a file of SHA-256 digests with names and scopes, and the command that writes it.

A token is 32 random bytes (``serlens_`` + URL-safe base64); only its SHA-256 digest is kept,
in a YAML (or JSON) file that a Kubernetes Secret can hold::

    tokens:
      - name: alice            # who is calling: owner of the training jobs this token submits
        sha256: 3b1f...        # hashlib.sha256(token.encode()).hexdigest()
        scopes: [read, predict]

Scopes: ``read`` (results, SQL, the API's docs), ``predict`` (the audio routes), ``train``
(training jobs and model promotion). Create one with
``python -m serlens.api.tokens create --file tokens.yaml --name alice --scopes read,predict``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serlens.shared.errors import InvalidConfigError

logger = logging.getLogger("ray.serve")

Scope = Literal["read", "predict", "train"]
SCOPES: tuple[Scope, ...] = ("read", "predict", "train")

#: Every token starts with this, so that a leaked one is easy to recognise (secret scanners).
TOKEN_PREFIX = "serlens_"


class TokenEntry(BaseModel):
    """One token of the file: who holds it, its digest, what it may do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: tuple[Scope, ...] = Field(min_length=1)


class TokenFile(BaseModel):
    """The token file: a list of entries with distinct digests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: tuple[TokenEntry, ...] = ()

    @field_validator("tokens")
    @classmethod
    def _distinct_digests(cls, tokens: tuple[TokenEntry, ...]) -> tuple[TokenEntry, ...]:
        digests = [t.sha256 for t in tokens]
        if len(set(digests)) != len(digests):
            raise ValueError("the same token digest appears twice")
        return tokens


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's name and its scopes."""

    name: str
    scopes: frozenset[str]


def token_digest(token: str) -> str:
    """The SHA-256 hex digest of a token (what the file stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token: ``serlens_`` and 32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def read_token_file(path: Path) -> TokenFile:
    """Read and validate a token file.

    Raises:
        InvalidConfigError: a missing or unreadable file, or entries that do not validate.
    """
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise InvalidConfigError(
            f"no API token file at {path}: create one with `python -m serlens.api.tokens "
            f"create --file {path} --name <you> --scopes read,predict,train`"
        ) from err
    except (OSError, yaml.YAMLError) as err:
        raise InvalidConfigError(f"API token file {path} cannot be read: {err}") from err
    try:
        return TokenFile.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise InvalidConfigError(f"API token file {path}: {problems}") from err


class TokenRegistry:
    """The tokens of a file, re-read when the file changes (a rotated Kubernetes Secret).

    Args:
        path: the token file.
        recheck_s: how often the file's modification time is looked at, in seconds.

    Raises:
        InvalidConfigError: the file is missing or invalid at start.
    """

    def __init__(self, path: Path, *, recheck_s: float = 5.0) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._entries = read_token_file(path).tokens
        self._mtime = path.stat().st_mtime_ns
        self._checked = time.monotonic()

    def _reload_if_changed(self) -> None:
        with self._lock:
            if time.monotonic() - self._checked < self.recheck_s:
                return
            self._checked = time.monotonic()
            try:
                mtime = self.path.stat().st_mtime_ns
                if mtime != self._mtime:
                    self._entries, self._mtime = read_token_file(self.path).tokens, mtime
                    logger.info("API tokens reloaded from %s (%d)", self.path, len(self._entries))
            except (OSError, InvalidConfigError) as err:
                # Keep the tokens read last: a half-written file must not lock everyone out.
                logger.error("API tokens not reloaded: %s", err)

    def authenticate(self, token: str) -> Caller | None:
        """The caller a token belongs to, or None.

        Every digest is compared, in constant time, whatever matches first.
        """
        self._reload_if_changed()
        presented = token_digest(token)
        found: TokenEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(presented, entry.sha256):
                found = entry
        return Caller(found.name, frozenset(found.scopes)) if found else None


def add_token(path: Path, *, name: str, scopes: Sequence[str]) -> str:
    """Create a token, append its digest to ``path`` (created if missing); the token itself.

    Raises:
        InvalidConfigError: an invalid name or scope, or an unreadable existing file.
    """
    current = read_token_file(path).tokens if path.exists() else ()
    token = new_token()
    try:
        entry = TokenEntry(name=name, sha256=token_digest(token), scopes=tuple(scopes))  # type: ignore[arg-type]
    except ValidationError as err:
        raise InvalidConfigError(f"token for {name!r}: {err.errors()[0]['msg']}") from err
    _write(path, (*current, entry))
    return token


def revoke(path: Path, *, name: str) -> int:
    """Remove every token of ``name`` from ``path``; how many were removed."""
    current = read_token_file(path).tokens
    kept = tuple(t for t in current if t.name != name)
    _write(path, kept)
    return len(current) - len(kept)


def _write(path: Path, entries: Sequence[TokenEntry]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"tokens": [e.model_dump(mode="json") for e in entries]}
    for entry in body["tokens"]:
        entry["scopes"] = list(entry["scopes"])
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("# serlens API tokens: SHA-256 digests only\n" + yaml.safe_dump(body, sort_keys=False))
    temporary.chmod(0o600)
    temporary.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serlens.api.tokens create|list|revoke --file F ...``."""
    parser = argparse.ArgumentParser(prog="python -m serlens.api.tokens", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("create", "list", "revoke"):
        p = sub.add_parser(command)
        p.add_argument("--file", type=Path, required=True, help="the token file (YAML)")
        if command != "list":
            p.add_argument("--name", required=True, help="who holds the token (owner of its jobs)")
        if command == "create":
            p.add_argument("--scopes", default="read,predict", help=f"comma-separated, of {','.join(SCOPES)}")
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            print(add_token(args.file, name=args.name, scopes=[s.strip() for s in args.scopes.split(",")]))
        elif args.command == "revoke":
            print(f"revoked {revoke(args.file, name=args.name)} token(s) of {args.name}")
        else:
            for entry in read_token_file(args.file).tokens:
                print(f"{entry.name}\t{','.join(entry.scopes)}\t{entry.sha256[:12]}…")
    except InvalidConfigError as err:
        print(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
