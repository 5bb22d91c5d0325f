"""Session-wide test settings: quiet, deterministic, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]


def shared_reference() -> Path | None:
    """The reference folder beside the checkout (``../shared``), or None on a bare clone."""
    candidate = Path(os.environ.get("SERLENS_SHARED", REPO.parent / "shared"))
    return candidate if (candidate / "paper.txt").exists() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (reference material); skips the test on a clone without it."""
    path = shared_reference()
    if path is None:
        pytest.skip("reference folder ../shared is not beside this checkout")
    return path
