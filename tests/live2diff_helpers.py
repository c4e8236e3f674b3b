"""Shared helpers for the Live2Diff tests: tiny components, configs, frames (a plain module, imported explicitly;
the fixtures pytest injects live in tests/conftest.py)."""

from __future__ import annotations

import functools

import torch

from live2diff.components import Components, build_components, encode_prompt
from tests.conftest import model_cfg


@functools.lru_cache(maxsize=4)
def _cached(seed: int) -> Components:
    return build_components(tiny_cfg(seed), "cpu", "float32")


@functools.lru_cache(maxsize=8)
def _tiny_cfg(seed: int) -> dict:
    return model_cfg("tiny_random", f"model.seed={seed}")


def tiny_cfg(seed: int = 0) -> dict:
    """``conf/model/tiny_random.yaml`` (random weights: the mechanics under test do not need trained ones) with
    ``model.seed``; a fresh copy each call."""
    import copy

    return copy.deepcopy(_tiny_cfg(seed))


def tiny_components(seed: int = 0, fresh: bool = False) -> Components:
    """Tiny random components; ``fresh`` builds a new copy (tests that patch the UNet must not share it)."""
    if fresh:
        return build_components(tiny_cfg(seed), "cpu", "float32")
    return _cached(seed)


def trained_components() -> Components:
    """A fresh copy of the project's trained tiny model (``model=tiny``: conf/model/tiny.yaml + shipped weights)."""
    from omegaconf import OmegaConf

    from live2diff.train_tiny import DEFAULT_MODEL_CFG

    return build_components(OmegaConf.load(str(DEFAULT_MODEL_CFG)), "cpu", "float32")


def randomise_motion_out(unet: torch.nn.Module, std: float = 0.2, seed: int = 1) -> None:
    """Give the motion modules' output projections real weight so the temporal path matters in the tests."""
    g = torch.Generator().manual_seed(seed)
    for name, p in unet.named_parameters():
        if "motion_modules" in name and "proj_out" in name:
            p.data = torch.randn(p.shape, generator=g) * std


def prompt_embeds(comps: Components, n: int, prompt: str = "a watercolor cat") -> torch.Tensor:
    return encode_prompt(comps, prompt).repeat(n, 1, 1)


def frames(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """``[n, 3, size, size]`` smooth moving pattern in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, size // 8, size // 8, generator=g)
    base = torch.nn.functional.interpolate(base[None], size=(size, size), mode="bilinear")[0]
    out = [torch.roll(base, shifts=(i, 2 * i), dims=(1, 2)) for i in range(n)]
    return torch.stack(out).clamp(0, 1)
