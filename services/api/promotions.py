"""Which checkpoint ``/embed`` and ``/predict`` serve: set only by an explicit promotion.

A promotion is a ``promotions`` row (newest per ``target`` wins) written by
``POST /models/promote`` (``train`` scope) or by
``python -m serlens.api.promotions --workdir W promote --train-key K --step N``; training never
writes one, so a new run changes nothing until someone promotes it. An API started with a
``model`` serves that model instead (a config value): a folder, a hub id, or a ``models:/`` URI
of the MLflow Model Registry (``models:/serlens-ser@champion``), downloaded once per version.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serlens.shared import model_uris
from serlens.shared.errors import NotFoundError, ServiceError
from serlens.shared.schema import CHECKPOINTS, PROMOTIONS
from serlens.shared.store import FeatureStore
from serlens.shared.tracking import tracking_config
from serlens.shared.workdir import Workdir

#: The one serving target (the column leaves room for more, e.g. a canary).
DEFAULT_TARGET = "default"


def current_promotion(store: FeatureStore, target: str = DEFAULT_TARGET) -> dict[str, Any] | None:
    """The newest promotion of ``target`` (``train_key``, ``checkpoint_step``, who, when), or None."""
    rows = store.read(PROMOTIONS.name, filters={"target": target}).to_pylist()
    return rows[-1] if rows else None


def served_model(model: str | None, workdir: Path) -> str | None:
    """The API's ``model`` setting as something to load: a ``models:/`` URI becomes its local folder.

    The URI is resolved by the tracking store ``MLFLOW_TRACKING_URI`` names, else the workdir's
    own, and downloaded into ``<workdir>/models`` (once per version); anything else is kept.

    Raises:
        InvalidConfigError: a malformed ``models:/`` URI.
        NotFoundError: no such registered model, alias, version or LoggedModel.
        TrackingError: the tracking store cannot be reached.
    """
    if model is None or not model_uris.is_model_uri(model):
        return model
    return model_uris.local_source(model, tracking_config(workdir), Workdir(workdir).models)


def promote(
    paths: Workdir,
    *,
    train_key: str,
    checkpoint_step: int,
    promoted_by: str,
    note: str | None = None,
    target: str = DEFAULT_TARGET,
) -> dict[str, Any]:
    """Make a stored checkpoint the one served by default.

    Args:
        paths: the workdir (its store and checkpoint folders).
        train_key: the fine-tuning run.
        checkpoint_step: the checkpoint of that run.
        promoted_by: who asked (a token's name, or the OS user for the command).
        note: why, for the record.
        target: the serving target.

    Returns:
        The promotion written.

    Raises:
        NotFoundError: the store has no such checkpoint, or its folder is gone.
    """
    store = paths.store
    rows = store.read(
        CHECKPOINTS.name, filters={"train_key": train_key, "checkpoint_step": checkpoint_step}
    ).to_pylist()
    if not rows:
        raise NotFoundError(f"no checkpoint {checkpoint_step} of fine-tuning run {train_key!r} in the store")
    stored = paths.resolve(rows[0]["local_path"])
    if not paths.checkpoint_dir(train_key, checkpoint_step).is_dir() and not (stored and stored.is_dir()):
        raise NotFoundError(f"checkpoint {checkpoint_step} of run {train_key!r} has no folder on disk")
    row = {
        "target": target,
        "train_key": train_key,
        "checkpoint_step": checkpoint_step,
        "promoted_by": promoted_by,
        "note": note,
    }
    store.write(PROMOTIONS.name, [row], config_hash=f"{train_key}:{checkpoint_step}")
    return row


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serlens.api.promotions --workdir W promote --train-key K --step N | show``."""
    parser = argparse.ArgumentParser(prog="python -m serlens.api.promotions", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("promote", help="serve this checkpoint from now on")
    p.add_argument("--train-key", required=True)
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--note", default=None)
    sub.add_parser("show", help="the checkpoint served now")
    args = parser.parse_args(argv)
    paths = Workdir(args.workdir.resolve())
    try:
        if args.command == "promote":
            row = promote(paths, train_key=args.train_key, checkpoint_step=args.step,
                          promoted_by=f"cli:{getpass.getuser()}", note=args.note)
        else:
            row = current_promotion(paths.store) or {}
    except ServiceError as err:
        print(f"error: {err}")
        return 2
    print(" ".join(f"{k}={v}" for k, v in row.items()) or "nothing promoted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
