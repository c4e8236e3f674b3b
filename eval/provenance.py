"""Where a result came from: resolved config, code version, packages, device, seed, time."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

PACKAGES = (
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "torchmetrics",
    "open-clip-torch",
    "lpips",
    "hydra-core",
    "numpy",
    "pandas",
    "av",
    "opencv-python-headless",
    "live2diff-bench",
)


def git_state(repo: Path | None = None) -> dict:
    """The checkout's commit; none for an installed package (its version is in ``packages``): site-packages may lie
    inside some other repository, whose commit is not this code's."""
    from eval.paths import CHECKOUT, PACKAGE_ROOT

    if repo is None and not CHECKOUT:
        return {"commit": None, "dirty": None}
    repo = repo or PACKAGE_ROOT

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str = "cpu") -> dict:
    """The machine a result was measured on: written into every run's provenance and the gate's reference (which
    compares the ``eval.gate.reference.MACHINE_KEYS`` of it)."""
    info = {
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "system": platform.system(),
        "arch": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        if str(device).startswith("cuda"):
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        else:
            info["gpu_present"] = torch.cuda.get_device_name(0)
    return info


def provenance(config: dict, *, seed: int, device: str) -> dict:
    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "packages": package_versions(),
        "device": device_info(device),
        "seed": seed,
        "config": config,
    }
