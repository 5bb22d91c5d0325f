"""Rows for the store tests, and `serlens store ...` run as a user runs it."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from serlens.pipeline.cli import main


def clip(i: int, dataset: str = "d") -> dict:
    """One minimal `clips` row."""
    return {"clip_id": f"c{i:05d}", "dataset": dataset, "audio_sha256": f"h{i}", "speaker": f"s{i % 3}",
            "label": "NEU", "subset": 1}


def checkpoint(step: int, loss: float = 1.0, train_key: str = "k") -> dict:
    """One `checkpoints` row."""
    return {"train_key": train_key, "checkpoint_step": step, "run_id": "r", "uri": "file:///x", "local_path": "/x",
            "model": "m", "epoch": 1.0, "train_loss": loss, "val_loss": loss, "val_f1_macro": 0.5}


def embedding_rows(step: int, n: int = 3, train_key: str = "k") -> pa.Table:
    """``n`` `embeddings` rows of one checkpoint (layer 0, a 4-dimensional vector each)."""
    return pa.table({
        "clip_id": [f"c{i}" for i in range(n)], "dataset": ["d"] * n, "audio_sha256": ["h"] * n,
        "model": ["m"] * n, "train_key": [train_key] * n, "checkpoint_step": pa.array([step] * n, pa.int32()),
        "layer": pa.array([0] * n, pa.int16()), "pooling": ["mean"] * n,
        "embedding": [np.ones(4, np.float32).tolist()] * n,
    })


def store_cli(workdir: Path, *args: str) -> tuple[int, str]:
    """``serlens store <args> --workdir <workdir>``: (exit code, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["store", *args, "--workdir", str(workdir)])
    return code, out.getvalue()


def open_catalogue(workdir: Path) -> duckdb.DuckDBPyConnection:
    """A workdir's DuckDB file as any outside DuckDB client opens it (read-only, file_search_path set)."""
    store = Path(workdir) / "store"
    con = duckdb.connect(str(store / "serlens.duckdb"), read_only=True)
    con.execute("SET file_search_path = ?", [str(store)])
    return con
