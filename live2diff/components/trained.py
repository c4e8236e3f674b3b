"""The project's trained tiny weights (``model.weights.trained``): one safetensors file with every component's
weights, keyed ``<component>.<parameter>``. Written by ``python -m live2diff.train_tiny``; read by
:func:`live2diff.components.build_components` (the builder never imports the training code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def has_weights(module: nn.Module) -> bool:
    """False for the weight-free ``pixel`` autoencoder (nothing to train, save or load)."""
    return bool(module.state_dict())


def trainable_state(comps) -> dict[str, Tensor]:
    """Every weight of the model (the VAE's too unless it is the weight-free ``pixel`` stand-in), keyed
    ``<component>.<parameter>``."""
    out: dict[str, Tensor] = {}
    for name, module in comps.modules().items():
        for k, v in module.state_dict().items():
            out[f"{name}.{k}"] = v.detach().clone()
    return out


def resolve_trained_path(path: str | Path) -> Path:
    """``model.weights.trained`` as given, or relative to the repository (the shipped file) when it is not found
    relative to the working directory (the one rule for weight paths: :func:`eval.weights.local_path`)."""
    from eval.weights import local_path

    return local_path(path)


def load_trained(path: str | Path, comps) -> None:
    """Load a file written by ``python -m live2diff.train_tiny`` into ``comps`` (every component; a weight-free ``pixel`` VAE has none).

    Components the configuration switched off (``depth.kind: none``) are skipped; any other mismatch — a missing or
    unexpected key, a wrong shape — is an error naming the file, since the architecture in ``conf/model/*.yaml``
    must be the one the weights were trained with."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    modules = {k: m for k, m in comps.modules().items() if k != "vae" or has_weights(m)}
    by_module: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        name, _, rest = key.partition(".")
        by_module.setdefault(name, {})[rest] = value
    hint = (
        "it was trained for conf/model/tiny.yaml's architecture (vae.kind pixel_taesd) — use model=tiny_random "
        "for a random model of another size"
    )
    unknown = set(by_module) - set(modules) - {"depth", "depth_mapper"}
    if unknown:
        raise ValueError(
            f"{path} (model.weights.trained) holds weights for components this model config does not have "
            f"{sorted(unknown)}{' (its VAE is weight-free)' if 'vae' in unknown else ''}; {hint}"
        )
    for name, module in modules.items():
        if name not in by_module:
            raise ValueError(f"{path} (model.weights.trained) has no '{name}' weights; {hint}")
        own = module.state_dict()
        sd = by_module[name]
        missing = [k for k in own if k not in sd]
        extra = [k for k in sd if k not in own]
        wrong = [k for k in sd if k in own and own[k].shape != sd[k].shape]
        if missing or extra or wrong:
            raise ValueError(
                f"{path} (model.weights.trained) does not fit the '{name}' of this model config "
                f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]}); {hint}"
            )
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})


def save_trained(comps, path: Path, meta: dict[str, Any]) -> None:
    """One safetensors file (float16: the model is evaluated with exactly these rounded weights)."""
    from safetensors.torch import save_file

    state = {k: v.to(torch.float16).contiguous() for k, v in trainable_state(comps).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"live2diff_tiny": json.dumps(meta, sort_keys=True)})
