"""Weight paths of ``model.weights``: existence checks with the config key in the error, and the state-dict
reader and the weights plan (``weight_plan``), both shared with the harness (:mod:`eval.weights`: validation runs
the builder's own plan before anything runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from eval.weights import (
    NONE,
    OPTIONAL,
    RANDOM,
    MissingWeightsError,
    PartialWeightsError,
    UnsafeCheckpointError,
    read_checkpoint,
    unwrap_state_dict,
    weight_plan,
)
from eval.weights import load_state_dict as _shared_load

__all__ = [
    "NONE",
    "OPTIONAL",
    "RANDOM",
    "MissingWeightsError",
    "PartialWeightsError",
    "UnsafeCheckpointError",
    "check_path",
    "load_state_dict",
    "read_checkpoint",
    "require",
    "unwrap_state_dict",
    "weight_plan",
]

#: what each ``model.weights.<key>`` holds (for error messages)
DESCRIPTIONS = {
    "base": "SD1.5 base weights (diffusers folder or single-file checkpoint)",
    "motion": "Live2Diff motion-module checkpoint",
    "lcm_lora": "LCM-LoRA weights",
    "style_lora": "style LoRA weights",
    "dreambooth": "DreamBooth checkpoint",
    "taesd": "TAESD (AutoencoderTiny) folder",
    "depth": "DPT depth model folder",
    "trained": "the project's trained tiny weights (python -m live2diff.train_tiny)",
    "animatediff_motion": "AnimateDiff motion-module checkpoint (method animatediff_window)",
}


def check_path(path: Any, key: str, what: str = "weights") -> Path | None:
    """None for an unset path (or ``random`` / ``none`` / ``n/a``); else the path, which must exist (the error
    names it and ``key``)."""
    if path in (None, "", "null", RANDOM, NONE, "n/a"):
        return None
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise MissingWeightsError(p, key, what)
    return p


def require(path: Path, key: str, what: str) -> None:
    if not path.exists():
        raise MissingWeightsError(path, key, what)


def load_state_dict(path: str | Path, key: str, what: str = "weights") -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or a ``weights_only`` pickle, unwrapped (nested ``state_dict``,
    ``module.`` prefix, metadata entries left out)."""
    p = Path(path)
    if not p.exists():
        raise MissingWeightsError(p, key, what)
    return _shared_load(p, key, what)
