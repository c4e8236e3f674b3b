"""Reading weight files from local paths: one loader for the metrics, the harness and the diffusion components.

A neutral module, not a metric: the metrics, validation, the pre-flight check, the cache key and the model's
components (``live2diff/components/``, ``live2diff/convert.py``) all read weights through it.

Nothing is downloaded. Pickles are read with ``torch.load(weights_only=True)`` only; a checkpoint that needs more
than that (an old training save with pickled objects) is refused with the command that converts it, once, to
safetensors — run only on a file you trust::

    python -m eval.weights to-safetensors model.ckpt model.safetensors

:func:`weight_plan` says what each ``model.weights`` entry of a model config will be (a path, ``random``, ``none``,
``n/a``) and refuses real weights mixed with unset ones: the builder runs it, and validation runs the same before
anything is computed.

Training saves wrap their weights in many ways; :func:`load_state_dict` accepts the common ones (a nested
``state_dict`` / ``model`` / ``module`` entry, a ``module.`` prefix from DataParallel/DDP, metadata entries such as
``global_step``) and returns the tensors only.

(``eval`` never imports ``live2diff``; the components import this module, so there is one loader.)
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from eval.paths import PACKAGE_ROOT

log = logging.getLogger(__name__)

CONVERT_COMMAND = "python -m eval.weights to-safetensors {path} {out}"
_WRAPPERS = ("state_dict", "model", "module", "model_state_dict", "net")


def local_path(value: str | os.PathLike) -> Path:
    """A configured weights path as a :class:`Path`: ``~`` expanded; a relative path that does not exist from the
    working directory but does under :data:`eval.paths.PACKAGE_ROOT` (a checkout's root or site-packages) is the
    project's file (e.g. ``live2diff/assets/tiny_trained.safetensors``). Every reader of weight paths (loaders,
    config validation, the pre-flight check, the cache key) resolves them here, so they agree."""
    p = Path(value).expanduser()
    if not p.is_absolute() and not p.exists() and (PACKAGE_ROOT / p).exists():
        return PACKAGE_ROOT / p
    return p


class MissingWeightsError(FileNotFoundError):
    """A configured weight file or folder does not exist (the message names the path and the config key)."""

    def __init__(self, path: str | os.PathLike, key: str, what: str = "weights"):
        self.path, self.key = str(path), key
        super().__init__(
            f"{what} not found at '{path}'. Set the config key `{key}` to an existing local path. "
            "Nothing is downloaded."
        )


class UnsafeCheckpointError(ValueError):
    """``torch.load(weights_only=True)`` refused a pickle: it holds more than tensors and plain containers."""


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
        "trained": True,  # one file with every component's weights (python -m live2diff.train_tiny): covers all the others
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


def resolve_weights(path: str | Path | None, config_key: str, what: str) -> Path:
    """Return ``path`` as an existing file, or raise an error that names the file and the config key to set."""
    if path is None or str(path) == "":
        raise ValueError(f"{what}: no weights file given; set {config_key}=/path/to/file")
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(p, config_key, f"{what} weights file")
    return p


def read_checkpoint(path: str | Path, config_key: str, what: str = "weights") -> object:
    """The raw object in a ``.safetensors`` file or a torch pickle (``weights_only=True``)."""
    p = resolve_weights(path, config_key, what)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        out = p.with_suffix(".safetensors")
        raise UnsafeCheckpointError(
            f"{what}: {p} (set by {config_key}) is a pickle that torch.load(weights_only=True) refuses to read: it "
            f"holds Python objects besides tensors ({str(e).splitlines()[0][:200]}). If you trust the file, "
            f"convert it once with `{CONVERT_COMMAND.format(path=p, out=out)}` and set {config_key}={out}"
        ) from None


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> tuple[dict[str, Tensor], list[str]]:
    """Tensors of a training save, and the names of the non-tensor entries that were left out.

    Descends into a nested ``state_dict`` (or ``model`` / ``module`` ...) entry while the level holds no tensors
    besides it, and strips a ``module.`` prefix that every key carries (DataParallel / DDP saves)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} does not hold a state dict (found {type(obj).__name__})")
    dropped: list[str] = []
    while True:
        nested = [k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)]
        if nested and not any(isinstance(v, Tensor) for v in obj.values()):
            dropped += [k for k in obj if k != nested[0]]
            obj = obj[nested[0]]
            continue
        break
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    dropped += [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    if not tensors:
        raise ValueError(f"{source} holds no tensors (entries: {sorted(map(str, obj))[:8]})")
    if dropped:
        log.info("%s: left out non-tensor entries %s", source, dropped[:10])
    return tensors, dropped


def load_state_dict(path: str | Path, config_key: str, what: str = "weights") -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch pickle (``weights_only=True``, never arbitrary code),
    unwrapped as :func:`unwrap_state_dict` does."""
    obj = read_checkpoint(path, config_key, what)
    return unwrap_state_dict(obj, f"{what}: {path} (set by {config_key})")[0]


def convert_to_safetensors(src: str | Path, dst: str | Path) -> int:
    """Rewrite a trusted pickle checkpoint as safetensors (tensors only; metadata entries dropped).

    This is the one place that unpickles with ``weights_only=False``: the user runs it by hand on a file they
    trust, so that every later load reads safetensors."""
    from safetensors.torch import save_file

    obj = torch.load(Path(src), map_location="cpu", weights_only=False)
    sd, dropped = unwrap_state_dict(obj, str(src))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(dst))
    if dropped:
        log.warning("left out non-tensor entries: %s", dropped[:10])
    return len(sd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.weights", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("to-safetensors", help="convert a trusted .ckpt/.pth/.bin pickle to .safetensors")
    conv.add_argument("src", type=Path)
    conv.add_argument("dst", type=Path)
    args = ap.parse_args(argv)
    n = convert_to_safetensors(args.src, args.dst)
    print(f"wrote {args.dst} ({n} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
