"""Starting or joining the Ray cluster a run uses."""

from __future__ import annotations

import os

import ray


def start_ray(address: str | None) -> None:
    """Join a cluster (``address``) or start a local Ray sized to this machine."""
    if ray.is_initialized():
        return
    # Keep Ray from hiding GPUs from tasks that ask for none (its upcoming default, without the warning).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    quiet = ",".join(["ignore::DeprecationWarning", "ignore::FutureWarning",
                      # transformers' WavLM passes a float bias and a bool padding mask to torch
                      "ignore:Support for mismatched key_padding_mask:UserWarning"])
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": quiet,
                        "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=env,
                 log_to_driver=True, logging_level="WARNING")
