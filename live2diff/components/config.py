"""The model configuration: a ``conf/model/*.yaml`` node is the only source of sizes (there is no Python copy).

``build_components`` takes the composed node (``model: ${model}`` in a method's YAML), a plain dict of the same
shape, or a size name / ``{"size": name, ...overrides}``, which reads ``conf/model/<name>.yaml`` and overlays the
overrides.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch

from eval.paths import CONF_DIR

#: conf/model/ of this checkout, or of the installed package (eval/paths.py)
MODEL_CONF_DIR = CONF_DIR / "model"

#: keys every model config must set (what the builders read without a default)
REQUIRED = ("size", "unet", "text_encoder", "vae", "depth", "mapping_channels")

WEIGHT_KEYS = ("base", "motion", "lcm_lora", "style_lora", "dreambooth", "taesd", "depth", "trained")


def get(cfg: Any, key: str, default: Any = None) -> Any:
    """Read ``a.b.c`` from a dict / DictConfig / attribute object, with a default."""
    node = cfg
    for part in key.split("."):
        if node is None:
            return default
        if isinstance(node, Mapping) or hasattr(node, "get"):
            try:
                node = node.get(part, None)
            except Exception:  # noqa: BLE001 - OmegaConf raises on missing struct keys
                node = None
        else:
            node = getattr(node, part, None)
    return default if node is None else node


def to_plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return cfg


def known_sizes() -> list[str]:
    return sorted(p.stem for p in MODEL_CONF_DIR.glob("*.yaml"))


def load_model_yaml(size: str) -> dict[str, Any]:
    """``conf/model/<size>.yaml`` as a plain dict; an unknown size suggests the closest."""
    path = MODEL_CONF_DIR / f"{size}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(str(size), known_sizes(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"unknown model size '{size}' (model.size): no {path}; known: {known_sizes()}.{hint}"
        )
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_model_cfg(model_cfg: Any) -> dict[str, Any]:
    """A complete model config as a plain dict.

    A node that sets every :data:`REQUIRED` key is used as it is; a size name or a partial dict is overlaid on
    ``conf/model/<size>.yaml``."""
    plain = to_plain(model_cfg)
    if plain is None:
        plain = {}
    if isinstance(plain, str):
        plain = {"size": plain}
    if not isinstance(plain, Mapping):
        raise TypeError(f"model config must be a mapping or a size name, got {type(plain).__name__}")
    if all(k in plain for k in REQUIRED):
        cfg = dict(plain)
    else:
        over = {k: v for k, v in plain.items() if v is not None}
        cfg = _deep_merge(load_model_yaml(str(plain.get("size") or "tiny")), over)
    cfg["weights"] = dict(cfg.get("weights") or {})
    cfg.setdefault("clip_skip", 2)
    cfg.setdefault("seed", 0)
    return cfg


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype '{dtype}' (hardware.dtype); use one of {sorted(table)}")
    return table[dtype]
