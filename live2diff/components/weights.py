"""Weight paths of ``model.weights``: existence checks with the config key in the error, and the state-dict
reader (the one shared with the metrics: :mod:`eval.weights`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from eval.weights import (
    MissingWeightsError,
    UnsafeCheckpointError,
    read_checkpoint,
    unwrap_state_dict,
)
from eval.weights import load_state_dict as _shared_load

__all__ = [
    "MissingWeightsError",
    "UnsafeCheckpointError",
    "check_path",
    "load_state_dict",
    "read_checkpoint",
    "require",
    "unwrap_state_dict",
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


#: ``model.weights.<key>: random`` — build this component with random weights, on purpose
RANDOM = "random"
#: ``model.weights.<key>: none`` — do not apply this optional addition (a LoRA, a DreamBooth file)
NONE = "none"
#: additions that may be left null even when real weights are given
OPTIONAL = ("style_lora", "dreambooth", "animatediff_motion")


class PartialWeightsError(ValueError):
    """Some real weights were given and others left unset: the unset ones would silently run random."""


def weight_plan(cfg: dict) -> dict[str, str]:
    """What each ``model.weights`` entry will be: a path, ``random``, ``none`` or ``n/a`` (not used by this
    config). Once any real weight is given, every component this config uses must be given a path or named
    ``random`` (``none`` for the LCM-LoRA), so that nothing runs random without saying so; raises
    :class:`PartialWeightsError` listing every unset key and how to set it. Runs before anything is built."""
    w = cfg.get("weights") or {}
    vae_kind = str((cfg.get("vae") or {}).get("kind", "tiny"))
    depth_kind = str((cfg.get("depth") or {}).get("kind", "tiny"))
    used = {
        "base": True,
        "motion": True,
        "lcm_lora": True,
        "style_lora": True,
        "dreambooth": True,
        "taesd": vae_kind == "tiny",
        "depth": depth_kind != "none",
        "trained": True,  # one file with every component's weights (live2diff.train_tiny): covers all the others
        "animatediff_motion": True,  # loaded by baselines/animatediff_window.py only
    }
    plan: dict[str, str] = {}
    for key in w:
        if key not in used:
            raise ValueError(f"unknown weights entry model.weights.{key}; known: {sorted(used)}")
    for key in used:
        v = w.get(key)
        v = None if v in (None, "", "null") else str(v)
        if v is not None and v.lower() in (RANDOM, NONE):
            v = v.lower()
        if not used[key]:
            if v not in (None, RANDOM, NONE):
                why = f"model.vae.kind={vae_kind}" if key == "taesd" else f"model.depth.kind={depth_kind}"
                raise ValueError(
                    f"model.weights.{key}={v} is given but {why} does not use it; "
                    + ("set model.vae.kind=tiny (TAESD)" if key == "taesd" else "set model.depth.kind=dpt")
                )
            plan[key] = "n/a"
            continue
        if v == NONE and key in ("base", "motion", "taesd", "depth"):
            raise ValueError(f"model.weights.{key}=none: use `random` (random weights) or a path")
        if v == RANDOM and key in ("lcm_lora", *OPTIONAL):
            raise ValueError(f"model.weights.{key}=random: a LoRA/DreamBooth addition is a path or `none`")
        plan[key] = v if v is not None else ""
    if depth_kind == "tiny" and plan["depth"] not in ("", RANDOM):
        raise ValueError(
            f"model.weights.depth={plan['depth']} is given but model.depth.kind=tiny (a random stand-in) cannot "
            "load it; set model.depth.kind=dpt for a transformers DPT folder"
        )
    if plan["trained"] not in ("", RANDOM, NONE):
        for (
            k,
            v,
        ) in plan.items():  # the full state dict covers every component; only additions may be stacked on
            if k != "trained" and v == "":
                plan[k] = "n/a"
    real = [k for k, v in plan.items() if v not in ("", RANDOM, NONE, "n/a")]
    unset = [k for k, v in plan.items() if v == "" and k not in (*OPTIONAL, "trained")]
    if real and unset:
        fixes = ", ".join(
            f"model.weights.{k}=/path" + (" (or none)" if k == "lcm_lora" else " (or random)") for k in unset
        )
        raise PartialWeightsError(
            f"real weights are given for {real} but not for {unset}: those would silently run with random "
            f"weights. Set {fixes}."
        )
    for k, v in plan.items():
        if v == "":
            plan[k] = NONE if k in ("lcm_lora", "trained", *OPTIONAL) else RANDOM
    return plan


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
