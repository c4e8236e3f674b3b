"""Loading model weights from local files only: metrics never download anything at run time."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def resolve_weights(path: str | Path | None, config_key: str, what: str) -> Path:
    """Return ``path`` as an existing file, or raise an error that names the file and the config key to set."""
    if path is None or str(path) == "":
        raise ValueError(f"{what}: no weights file given; set {config_key}=/path/to/file")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what}: weights file not found: {p} (set by {config_key})")
    return p


def load_state_dict(path: str | Path, config_key: str, what: str) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch pickle (``weights_only=True``, never arbitrary code)."""
    p = resolve_weights(path, config_key, what)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{what}: {p} does not hold a state dict (set by {config_key})")
    return sd
