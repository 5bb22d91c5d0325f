"""What a run prints: one progress bar per stage in the driver, library noise only with ``--verbose``.

Progress bars: ``progress_bar`` gives a plain tqdm bar in the driver (redrawn in place; when
the output is a log file rather than a terminal, redrawn at most every ``LOG_REFRESH_S``), and
inside a Ray worker a bar that Ray's own ``tqdm_ray`` draws in the driver, so a fine-tuning
task does not turn every refresh into a forwarded log line.

Library noise (INFO lines of transformers, Ray, MLflow, alembic, urllib3, ...; their
progress bars and known warnings): ``quiet_libraries`` silences it in this process,
``ray_runtime_env`` in every Ray worker (environment variables and a worker setup hook).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

#: Set in the environment of the driver and of every Ray worker when ``--verbose`` is given.
VERBOSE_ENV = "SERLENS_VERBOSE"

#: Loggers that report progress or setup at INFO; WARNING and above still show.
NOISY_LOGGERS = ("transformers", "ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic", "urllib3",
                 "httpx", "httpcore", "filelock", "huggingface_hub", "matplotlib", "numba", "torch", "fsspec",
                 "opensmile", "audinterface", "sqlalchemy")

#: Warnings known to be harmless here, ignored: ``(message prefix, category)``.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    ("", DeprecationWarning),
    ("", FutureWarning),
    # transformers' WavLM passes a float bias and a bool padding mask to torch
    ("Support for mismatched key_padding_mask", UserWarning),
)

#: Warnings matched anywhere in their text (MLflow colours its advice, so it does not start with its words):
#: its advice to type-hint ``predict``, which serlens' pyfunc model answers with an explicit signature.
KNOWN_WARNING_PATTERNS: tuple[tuple[str, type[Warning]], ...] = (
    (r".*Add type hints to the `predict` method", UserWarning),
)

#: The same, as ``PYTHONWARNINGS`` (read by every Ray worker at start).
PYTHONWARNINGS = ",".join(f"ignore:{message}:{category.__name__}" for message, category in KNOWN_WARNINGS)

#: Environment of a quiet process: transformers' and the hub's verbosity and progress bars, MLflow's level.
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
             "TOKENIZERS_PARALLELISM": "false"}

#: Seconds between redraws of a bar whose output is not a terminal (a log file, ``kubectl logs``).
LOG_REFRESH_S = 30.0

#: Seconds between a worker bar's reports to the driver (each is a message, never a log line).
WORKER_FLUSH_S = 2.0


def verbose() -> bool:
    """Whether library log lines are wanted (``--verbose``, or ``SERLENS_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _dropping_known(show: Any) -> Any:
    """``warnings.showwarning`` that drops the ``KNOWN_WARNING_PATTERNS`` and shows the rest with ``show``.

    Filters alone cannot hide MLflow's advice: it is raised inside MLflow's own
    ``catch_warnings()`` with ``simplefilter("once")``, which outranks every filter set outside.
    """
    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int,
                    file: Any = None, line: str | None = None) -> None:
        if not any(issubclass(category, known) and re.match(pattern, str(message))
                   for pattern, known in KNOWN_WARNING_PATTERNS):
            show(message, category, filename, lineno, file, line)

    showwarning.serlens_quiet = True  # type: ignore[attr-defined]
    return showwarning


def quiet_libraries() -> None:
    """Hide the libraries' INFO lines, progress bars and known warnings in this process, unless verbose.

    Also the setup hook of every Ray worker (``ray_runtime_env``).
    """
    if verbose():
        return
    if not getattr(warnings.showwarning, "serlens_quiet", False):
        warnings.showwarning = _dropping_known(warnings.showwarning)
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for pattern, category in KNOWN_WARNING_PATTERNS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    if "transformers" in sys.modules:  # imported already: its environment variables were read
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Within the block, ``name``'s log lines below ``level`` and its Python warnings are hidden (unless verbose).

    For calls whose warnings are about choices serlens made on purpose (MLflow's advice to log a
    model from code rather than as an object, or to type-hint ``predict`` when a signature is given).
    """
    if verbose():
        yield
        return
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(before)


def set_verbose(on: bool) -> None:
    """Record ``--verbose`` for this process and the Ray workers it starts."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def ray_runtime_env() -> dict[str, Any]:
    """The runtime environment of a run's Ray workers: quiet unless verbose, with the same settings."""
    env_vars = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": PYTHONWARNINGS}
    if verbose():
        env_vars[VERBOSE_ENV] = "1"
    else:
        env_vars.update(QUIET_ENV)
    return {"env_vars": env_vars, "worker_process_setup_hook": "serlens.shared.console.quiet_libraries"}


def _in_ray_worker() -> bool:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    return bool(ray._private.worker.global_worker.mode == ray.WORKER_MODE)


class _WorkerBar:
    """A bar inside a Ray worker, drawn by the driver (``ray.experimental.tqdm_ray``).

    Takes the subset of tqdm's interface serlens uses: ``update``, ``set_postfix``, ``close``.
    """

    def __init__(self, *, total: int | None, desc: str, unit: str, initial: int) -> None:
        from ray.experimental import tqdm_ray

        self.desc = desc
        self.bar = tqdm_ray.tqdm(total=total, desc=desc, unit=unit, flush_interval_s=WORKER_FLUSH_S)
        if initial:
            self.bar.update(initial)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_description(self.desc + " " + ", ".join(f"{k}={v}" for k, v in values.items()))

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> _WorkerBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(*, total: int | None, desc: str, unit: str = "it", initial: int = 0,
                 disable: bool = False) -> Any:
    """One progress bar: tqdm in the driver, a driver-drawn bar inside a Ray worker.

    Args:
        total: steps to do (None: unknown).
        desc: what the bar counts, shown first.
        unit: what one step is (``clip``, ``step``).
        initial: steps done already (a resumed run).
        disable: no bar at all (``--quiet``).

    Returns:
        An object with tqdm's ``update(n)``, ``set_postfix(**values)`` and ``close()``.
    """
    if not disable and _in_ray_worker():
        return _WorkerBar(total=total, desc=desc, unit=unit, initial=initial)
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, dynamic_ncols=interactive,
                mininterval=0.1 if interactive else LOG_REFRESH_S)
