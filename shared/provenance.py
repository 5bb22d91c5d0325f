"""Provenance recorded with each run when it runs: software, code, hardware and weights.

The report shows what was recorded, not what happens to be installed when it is drawn.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: What the numbers depend on.
PACKAGES = ("serlens", "torch", "transformers", "ray", "opensmile", "pyloudnorm", "soundfile", "soxr", "pyarrow",
            "duckdb", "mlflow", "numpy", "scikit-learn", "scipy", "matplotlib")
#: Bytes of each weight file read into its fingerprint (the whole of every other model file).
_WEIGHT_PREFIX_BYTES = 1 << 20


def package_versions() -> dict[str, str]:
    """Installed versions of what the numbers depend on (``not installed`` when absent)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The commit of the serlens checkout this code runs from (``+dirty`` when edited), or None."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None  # an installed wheel, or no git: the package version says what ran
    return f"{commit}+dirty" if dirty else commit


def hardware() -> dict[str, Any]:
    """The machine this runs on: CPU model and count, memory, and each visible GPU with its driver."""
    info: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(), "cpu": _cpu_model(),
                            "system": platform.platform()}
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
            info["gpu_driver"] = _nvidia_driver()
    except ImportError:
        pass
    return info


def model_fingerprint(name_or_path: str, revision: str | None) -> dict[str, Any]:
    """Which weights: the name and revision asked for, and for a local folder a content fingerprint.

    The fingerprint hashes every small file (configs) whole and each weight file's size and first
    MiB, so it changes when the weights do, without reading gigabytes.
    """
    out: dict[str, Any] = {"name": name_or_path, "revision": revision}
    folder = Path(name_or_path)
    if folder.is_dir():
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            digest.update(path.name.encode())
            with open(path, "rb") as fh:
                if path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
                    digest.update(str(path.stat().st_size).encode())
                    digest.update(fh.read(_WEIGHT_PREFIX_BYTES))
                else:
                    digest.update(fh.read())
        out["fingerprint"] = digest.hexdigest()[:16]
    return out


def collect(*, model: str, revision: str | None, cluster: dict[str, float] | None = None) -> dict[str, Any]:
    """Everything recorded with a run: packages, commit, this machine, the Ray cluster, the weights."""
    return {"packages": package_versions(), "git_commit": git_commit(), "driver_host": hardware(),
            "cluster_resources": cluster or {}, "model": model_fingerprint(model, revision)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None
