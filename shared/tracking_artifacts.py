"""Folders logged as MLflow artifacts with a hash manifest, verified and repaired.

``log_folder`` uploads a folder's files, then ``serlens-manifest.json`` (each file's size and
SHA-256) last: an upload that stopped halfway has no manifest, or files that do not match
it. ``verify_folder`` compares what the run holds against the manifest of the local folder:
sizes always, and SHA-256 too when the artifacts live on a local file system (the default
SQLite setup), where reading them back is cheap. ``repair_folder`` uploads only what is
missing or wrong, then the manifest.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from serlens.shared.errors import NotFoundError
from serlens.shared.tracking import TrackingConfig, artifact_uri, call

MANIFEST_FILENAME = "serlens-manifest.json"
_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def folder_manifest(folder: Path, *, exclude: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Each file under ``folder`` (by relative POSIX path): ``{"size": bytes, "sha256": hex}``.

    Raises:
        NotFoundError: when ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotFoundError(f"cannot log {root} as artifacts: not a folder")
    skip = set(exclude) | {MANIFEST_FILENAME}
    return {path.relative_to(root).as_posix(): {"size": path.stat().st_size, "sha256": sha256_file(path)}
            for path in sorted(root.rglob("*")) if path.is_file() and path.name not in skip}


def _upload(config: TrackingConfig, run_id: str, root: Path, artifact_path: str, relative: str) -> None:
    parent = Path(relative).parent.as_posix()
    destination = artifact_path if parent == "." else f"{artifact_path}/{parent}"
    call(config, f"upload {root / relative}",
         lambda c: c.log_artifact(run_id, str(root / relative), destination))


def _upload_manifest(config: TrackingConfig, run_id: str, artifact_path: str,
                     manifest: dict[str, dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MANIFEST_FILENAME
        path.write_text(json.dumps({"files": manifest}, indent=1, sort_keys=True))
        call(config, f"upload the manifest of {artifact_path}",
             lambda c: c.log_artifact(run_id, str(path), artifact_path))


def log_folder(config: TrackingConfig, run_id: str, folder: Path, artifact_path: str, *,
               exclude: Iterable[str] = ()) -> str:
    """Log the files of a folder (recursively) under ``artifact_path``, then its manifest.

    Args:
        config: tracking config.
        run_id: the run.
        folder: local folder to upload.
        artifact_path: destination inside the run's artifacts, e.g. ``checkpoints/step-000050``.
        exclude: file names (at any depth) to leave out.

    Returns:
        The artifacts' URI, ``runs:/<run_id>/<artifact_path>``.

    Raises:
        NotFoundError: when ``folder`` is not a directory.
        TrackingError: when an upload fails after its retries.
    """
    manifest = folder_manifest(folder, exclude=exclude)
    for relative in manifest:
        _upload(config, run_id, Path(folder), artifact_path, relative)
    _upload_manifest(config, run_id, artifact_path, manifest)
    return artifact_uri(run_id, artifact_path)


def _remote_files(config: TrackingConfig, run_id: str, artifact_path: str) -> dict[str, int | None]:
    """Every file the run holds under ``artifact_path``: relative path -> size in bytes."""
    found: dict[str, int | None] = {}
    pending = [artifact_path]
    while pending:
        current = pending.pop()
        for info in call(config, f"list {current}", lambda c, p=current: c.list_artifacts(run_id, p)):
            if info.is_dir:
                pending.append(info.path)
            else:
                found[info.path[len(artifact_path):].lstrip("/")] = info.file_size
    return found


def _local_artifact_root(config: TrackingConfig, run_id: str) -> Path | None:
    uri = call(config, f"look up run {run_id}", lambda c: c.get_run(run_id)).info.artifact_uri
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


def verify_folder(config: TrackingConfig, run_id: str, folder: Path, artifact_path: str, *,
                  exclude: Iterable[str] = ()) -> list[str]:
    """What the run's copy of ``folder`` lacks: files missing, of another size or hash, or no manifest.

    Returns:
        One line per problem (relative path and what is wrong); empty when complete.

    Raises:
        NotFoundError: when ``folder`` is not a directory.
        TrackingError: when the store cannot be reached.
    """
    return _problems(config, run_id, folder_manifest(folder, exclude=exclude), artifact_path)


def _problems(config: TrackingConfig, run_id: str, manifest: dict[str, dict[str, Any]],
              artifact_path: str) -> list[str]:
    remote = _remote_files(config, run_id, artifact_path)
    local_root = _local_artifact_root(config, run_id)
    problems = [] if MANIFEST_FILENAME in remote else [f"{MANIFEST_FILENAME}: missing (upload unfinished)"]
    for relative, expected in manifest.items():
        if relative not in remote:
            problems.append(f"{relative}: missing")
        elif remote[relative] is not None and remote[relative] != expected["size"]:
            problems.append(f"{relative}: {remote[relative]} bytes, expected {expected['size']}")
        elif local_root is not None and sha256_file(local_root / artifact_path / relative) != expected["sha256"]:
            problems.append(f"{relative}: SHA-256 differs")
    return problems


def repair_folder(config: TrackingConfig, run_id: str, folder: Path, artifact_path: str, *,
                  exclude: Iterable[str] = ()) -> list[str]:
    """Upload what ``verify_folder`` finds missing or wrong, then the manifest; return what was wrong.

    Raises:
        NotFoundError: when ``folder`` is not a directory.
        TrackingError: when the store cannot be reached.
    """
    manifest = folder_manifest(folder, exclude=exclude)
    problems = _problems(config, run_id, manifest, artifact_path)
    if not problems:
        return []
    broken = {line.split(":", 1)[0] for line in problems}
    for relative in manifest:
        if relative in broken:
            _upload(config, run_id, Path(folder), artifact_path, relative)
    _upload_manifest(config, run_id, artifact_path, manifest)
    return problems
