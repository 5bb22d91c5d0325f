"""serlens: what happens inside a self-supervised speech model when it is fine-tuned for a task.

The Python API, for notebooks and scripts (the ``serlens`` command wraps the same calls)::

    import serlens

    args = serlens.load_config("demo", overrides=["probe.seeds=3"])
    result = serlens.run_study(args, workdir="serlens-work")
    con = serlens.open_store("serlens-work")
    con.sql("SELECT checkpoint_step, layer, value FROM cka WHERE estimator = 'debiased'").df()

Importing this package is cheap: Ray, torch and openSMILE load when a function needs them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from serlens.pipeline.config import StudyArgs
    from serlens.pipeline.run import StudyResult

try:
    __version__ = version("serlens")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "load_config", "open_store", "run_study"]


def load_config(config: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> StudyArgs:
    """Read and validate a run config.

    Args:
        config: a YAML file, or a shipped config by name (``"demo"``, ``"crema-d"``);
            ``None`` is the demo.
        overrides: ``section.key=value`` strings, as ``serlens run --set`` takes them.

    Raises:
        InvalidConfigError: a missing file, unknown keys or bad values; the message names each.
    """
    from serlens.pipeline.config import load_study_args

    return load_study_args(config, overrides)


def run_study(
    config: StudyArgs | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    workdir: str | os.PathLike[str] = "serlens-work",
    overrides: Sequence[str] = (),
    address: str | None = None,
    skip_invalid: bool = False,
    progress: bool = True,
) -> StudyResult:
    """Run the whole study (``serlens run``): start or join Ray, run every stage, write the report.

    Args:
        config: validated ``StudyArgs``, a dict of sections, a YAML path or a shipped name.
        workdir: the folder for the store, MLflow, figures and report.
        overrides: ``section.key=value`` strings applied to a file or name (not to ``StudyArgs``).
        address: a Ray cluster to join (``"auto"`` inside one); ``None`` starts a local Ray.
        skip_invalid: leave invalid clips out (recorded in ``skipped``) instead of stopping.
        progress: show progress bars.

    Returns:
        The run's result: its workdir layout, keys, MLflow run id, figures and warnings.

    Raises:
        ServiceError: a bad config or bad input, named before any stage runs.
    """
    from serlens.pipeline.config import StudyArgs, apply_overrides
    from serlens.pipeline.run import run_study as _run_study
    from serlens.shared.errors import InvalidConfigError

    if isinstance(config, StudyArgs):
        if overrides:
            raise InvalidConfigError("overrides apply to a config file or dict, not to StudyArgs: "
                                     "pass them to load_config")
        args = config
    elif isinstance(config, Mapping):
        from pydantic import ValidationError

        try:
            args = StudyArgs.model_validate(apply_overrides(dict(config), overrides))
        except ValidationError as err:
            raise InvalidConfigError(f"invalid config:\n{err}") from err
    else:
        args = load_config(config, overrides)
    return _run_study(args, workdir=Path(workdir).resolve(), address=address, skip_invalid=skip_invalid,
                      progress=progress)


def open_store(workdir: str | os.PathLike[str] = "serlens-work") -> duckdb.DuckDBPyConnection:
    """Open a workdir's feature store read-only: the same SQL views as ``serlens sql``.

    Args:
        workdir: the folder a run wrote (it holds ``store/serlens.duckdb``).

    Returns:
        A read-only DuckDB connection; ``con.sql(...).df()`` gives a pandas frame.

    Raises:
        StoreError: when the workdir holds no store yet.
    """
    from serlens.shared.workdir import Workdir

    return Workdir(Path(workdir).resolve()).store.connect_readonly(sandboxed=True)
