"""Starting or joining the Ray cluster a run uses, and what it runs on."""

from __future__ import annotations

import os
from typing import Any

import ray

from serlens.shared.console import ray_runtime_env, verbose


def start_ray(address: str | None) -> None:
    """Join a cluster (``address``) or start a local Ray sized to this machine."""
    if ray.is_initialized():
        return
    # Keep Ray from hiding GPUs from tasks that ask for none (its upcoming default, without the warning).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Workers' log lines still reach the driver (errors, warnings, and with --verbose the
    # libraries' INFO lines); their progress bars are drawn by the driver (serlens.shared.console).
    env = ray_runtime_env()
    level = "INFO" if verbose() else "WARNING"
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True, logging_level=level)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=env,
                 log_to_driver=True, logging_level=level)


def run_provenance(model: str, revision: str | None) -> dict[str, Any]:
    """What a run runs on, recorded when it runs: packages, commit, hardware, the weights, the driver's node."""
    from serlens.pipeline import stages
    from serlens.shared.provenance import collect

    record = collect(model=model, revision=revision, cluster=dict(ray.cluster_resources()))
    record["driver_node"] = ray.get_runtime_context().get_node_id()
    if stages.cluster_gpus() >= 1:
        record["gpu_node"] = ray.get(stages.hardware_task.options(num_gpus=1, num_cpus=0).remote())
    return record
