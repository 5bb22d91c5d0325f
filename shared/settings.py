"""The one place that reads environment variables (endpoints and locations only)."""

from __future__ import annotations

import os
from pathlib import Path

#: Default working folder of a run, relative to the current directory.
DEFAULT_WORKDIR = "serlens-work"


def default_workdir() -> Path:
    """``SERLENS_WORKDIR`` if set, else ``./serlens-work``."""
    return Path(os.environ.get("SERLENS_WORKDIR") or DEFAULT_WORKDIR)


def ray_address() -> str | None:
    """``RAY_ADDRESS`` if set (a cluster to join), else None (start a local Ray)."""
    return os.environ.get("RAY_ADDRESS") or None


def mlflow_tracking_uri() -> str | None:
    """``MLFLOW_TRACKING_URI`` if set, else None (a sqlite file in the workdir)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def hf_hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids downloads from the Hugging Face hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("", "0", "false", "no")


def reference_folder() -> Path | None:
    """``SERLENS_SHARED`` (the reference material the tests may read), if set."""
    value = os.environ.get("SERLENS_SHARED")
    return Path(value) if value else None


def api_tokens_file() -> Path | None:
    """``SERLENS_API_TOKENS_FILE`` (the API's hashed-token file, e.g. a mounted Secret), if set."""
    value = os.environ.get("SERLENS_API_TOKENS_FILE")
    return Path(value) if value else None
