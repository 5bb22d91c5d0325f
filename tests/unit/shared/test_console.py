"""Library noise is hidden unless verbose; progress bars outside Ray are plain tqdm."""

from __future__ import annotations

import logging
import warnings

import pytest
from tqdm import tqdm

from serlens.shared import console


@pytest.fixture
def restore_levels():
    levels = {name: logging.getLogger(name).level for name in console.NOISY_LOGGERS}
    with warnings.catch_warnings():
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_quiet_hides_library_info_and_verbose_keeps_it(restore_levels, monkeypatch):
    for name in console.NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    console.quiet_libraries()
    assert all(logging.getLogger(name).level == logging.NOTSET for name in console.NOISY_LOGGERS)
    monkeypatch.delenv(console.VERBOSE_ENV)
    console.quiet_libraries()
    for name in ("mlflow", "alembic", "urllib3", "transformers", "ray"):
        assert logging.getLogger(name).level >= logging.WARNING, name
    assert not logging.getLogger("mlflow.store.db.utils").isEnabledFor(logging.INFO)


def test_worker_environment_is_quiet_unless_verbose(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    env = console.ray_runtime_env()
    assert env["env_vars"]["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    assert env["worker_process_setup_hook"] == "serlens.shared.console.quiet_libraries"
    console.set_verbose(True)
    try:
        verbose = console.ray_runtime_env()["env_vars"]
        assert verbose[console.VERBOSE_ENV] == "1" and "MLFLOW_LOGGING_LEVEL" not in verbose
    finally:
        console.set_verbose(False)


def test_progress_bar_outside_ray_is_tqdm_and_can_be_disabled(capsys):
    with console.progress_bar(total=3, desc="stage", unit="clip") as bar:
        assert isinstance(bar, tqdm)
        bar.update(3)
    assert "stage" in capsys.readouterr().err
    with console.progress_bar(total=3, desc="quiet", disable=True) as bar:
        bar.update(3)
    assert "quiet" not in capsys.readouterr().err


def test_mlflows_advice_is_hidden_even_inside_its_own_catch_warnings():
    """MLflow warns inside ``catch_warnings()`` + ``simplefilter("once")``, which outranks filters."""
    import subprocess
    import sys

    script = (
        "import warnings\n"
        "from serlens.shared.console import quiet_libraries\n"
        "from mlflow.utils.warnings_utils import color_warning\n"
        "quiet_libraries()\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('once', category=UserWarning)\n"
        "    color_warning('Add type hints to the `predict` method to enable data validation', 1, 'yellow')\n"
        "    warnings.warn('another warning is still shown', UserWarning)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "SERLENS_VERBOSE"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "Add type hints" not in done.stderr and "another warning is still shown" in done.stderr
