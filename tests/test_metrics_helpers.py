"""Shared helpers for the metric tests (no tests here): known-flow clips and a ground-truth flow oracle."""

from __future__ import annotations

import torch
from torch import Tensor

from eval.datasets.synthetic import generate_clip


def translating_clip(num_frames: int = 8, size: int = 64, seed: int = 0, speed: float = 1.5):
    """A smooth texture moving by a constant sub-pixel translation: exact flow in both directions is known."""
    return generate_clip(num_frames, size, size, seed=seed, num_objects=0, max_speed=speed, rotation=False)


class TranslationOracle:
    """Flow estimator that returns the exact flow of a ``translating_clip`` between any two of its frames.

    It recognises which frames it was given (nearest stored frame), so it also checks that callers pass the
    frames in the right order: flow(a -> b) = (index(b) - index(a)) * velocity.
    """

    name = "oracle"

    def __init__(self, frames: Tensor, bwd_flow_1: Tensor) -> None:
        self.frames = frames.float()
        self.velocity = -bwd_flow_1[:, 0, 0].clone()  # flow[1] = -v everywhere (translation only)
        self.calls = 0

    def index(self, img: Tensor) -> int:
        d = (self.frames - img.float()[None]).abs().flatten(1).mean(1)
        i = int(d.argmin())
        assert d[i] < 1e-6, "oracle was given a frame that is not in its clip"
        return i

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        self.calls += 1
        out = torch.empty(a.shape[0], 2, *a.shape[-2:])
        for k in range(a.shape[0]):
            out[k] = ((self.index(b[k]) - self.index(a[k])) * self.velocity)[:, None, None]
        return out


def flicker(frames: Tensor, level: float, seed: int = 0) -> Tensor:
    """Add a per-frame global brightness offset of +-level (on [0, 1]), random signs: pure temporal flicker."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (frames.shape[0],), generator=g).float() * 2 - 1
    return (frames + level * signs[:, None, None, None]).clamp(0, 1)
