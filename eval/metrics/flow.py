"""Optical flow for the warp-error metric: estimators, bilinear warping and the forward-backward occlusion check.

Convention (shared with ``eval.datasets.synthetic``): ``estimator(a, b)`` returns the flow ``f`` from ``a`` to ``b``
in pixels, x first then y, with ``a(p) ≈ b(p + f(p))``. The *backward* flow of frame t is ``estimator(I_t, I_{t-1})``
and sampling frame t-1 at ``p + f(p)`` (``warp``) reproduces frame t away from occlusions.
"""

from __future__ import annotations

import logging
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eval.weights import load_state_dict

log = logging.getLogger(__name__)


class FlowEstimator(Protocol):
    name: str

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        """``a``, ``b``: ``[N, 3, H, W]`` float in [0, 1]; returns ``[N, 2, H, W]`` float32 flow from a to b."""
        ...


def to_uint8_gray(frames: Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in [0, 1] -> ``[N, H, W]`` uint8 luma (what the OpenCV estimators take)."""
    rgb = (
        (frames.detach().float().clamp(0, 1) * 255.0)
        .round()
        .to(torch.uint8)
        .permute(0, 2, 3, 1)
        .cpu()
        .numpy()
    )
    return np.stack([cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY) for im in rgb])


class DISFlow:
    """OpenCV's Dense Inverse Search: weight-free, fast on CPU, the default backend."""

    name = "dis"
    _PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}

    def __init__(self, preset: str = "medium") -> None:
        if preset not in self._PRESETS:
            raise ValueError(f"DIS preset must be one of {sorted(self._PRESETS)}, got {preset!r}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(self._PRESETS[preset])

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        ga, gb = to_uint8_gray(a), to_uint8_gray(b)
        flows = [self._dis.calc(x, y, None) for x, y in zip(ga, gb)]
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).float()


class FarnebackFlow:
    """OpenCV Farneback polynomial-expansion flow (weight-free; slower and blurrier than DIS)."""

    name = "farneback"

    def __init__(
        self,
        pyr_scale: float = 0.5,
        levels: int = 3,
        winsize: int = 15,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
    ) -> None:
        self.params = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, 0)

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        ga, gb = to_uint8_gray(a), to_uint8_gray(b)
        flows = [cv2.calcOpticalFlowFarneback(x, y, None, *self.params) for x, y in zip(ga, gb)]
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).float()


class RaftFlow:
    """torchvision RAFT (large or small) from a local weights file; frames scaled to [-1, 1] as RAFT expects.

    Frames are padded (replicate) to a multiple of 8 and to at least 128x128, as torchvision's RAFT requires
    (its 4-level correlation pyramid works at 1/8 resolution), and the flow is cropped back.
    """

    MIN_SIZE = 128

    name = "raft"
    CONFIG_KEY = "metrics.warp_error.raft_weights"

    def __init__(
        self,
        weights: str | None,
        model: str = "large",
        iters: int = 12,
        device: str = "cpu",
        batch_size: int = 4,
        config_key: str | None = None,
    ) -> None:
        from torchvision.models.optical_flow import raft_large, raft_small

        builders = {"large": raft_large, "small": raft_small}
        if model not in builders:
            raise ValueError(f"RAFT model must be 'large' or 'small', got {model!r}")
        key = config_key or self.CONFIG_KEY
        if weights is None:
            raise ValueError(
                f"warp_error flow=raft needs local RAFT-{model} weights (torchvision's raft_{model}_*.pth or a "
                f".safetensors state dict); set {key}=/path/to/file, or use flow=dis (weight-free)"
            )
        sd = load_state_dict(weights, key, f"RAFT-{model}")
        net = builders[model](weights=None, progress=False)
        missing, unexpected = net.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"RAFT-{model} weights {weights} ({key}) do not match the architecture: "
                f"missing {missing[:5]}..., unexpected {unexpected[:5]}..."
            )
        self.model = net.eval().to(device)
        self.model_kind, self.iters, self.device, self.batch_size = model, iters, device, batch_size

    @torch.no_grad()
    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        h, w = a.shape[-2:]
        ph, pw = max(self.MIN_SIZE - h, (-h) % 8), max(self.MIN_SIZE - w, (-w) % 8)
        out = []
        for i in range(0, a.shape[0], self.batch_size):
            x = torch.stack([a[i : i + self.batch_size], b[i : i + self.batch_size]]).to(self.device).float()
            x = x * 2.0 - 1.0
            if ph or pw:
                x = F.pad(x.flatten(0, 1), (0, pw, 0, ph), mode="replicate").unflatten(0, (2, -1))
            flow = self.model(x[0], x[1], num_flow_updates=self.iters)[-1]
            out.append(flow[:, :, :h, :w].float().cpu())
        return torch.cat(out)


def make_flow(
    flow: str,
    *,
    dis_preset: str = "medium",
    raft_weights: str | None = None,
    raft_model: str = "large",
    raft_iters: int = 12,
    device: str = "cpu",
    batch_size: int = 4,
) -> FlowEstimator:
    if flow == "dis":
        return DISFlow(dis_preset)
    if flow == "farneback":
        return FarnebackFlow()
    if flow == "raft":
        return RaftFlow(raft_weights, raft_model, raft_iters, device, batch_size)
    raise ValueError(f"unknown flow backend {flow!r}; choose one of 'dis', 'farneback', 'raft'")


def _grid(h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=device),
        torch.arange(w, dtype=dtype, device=device),
        indexing="ij",
    )
    return xs, ys


def warp(img: Tensor, flow: Tensor, padding_mode: str = "border") -> Tensor:
    """Sample ``img`` ``[N, C, H, W]`` at ``p + flow(p)`` (bilinear, pixel centres at integers)."""
    n, _, h, w = img.shape
    xs, ys = _grid(h, w, flow.dtype, flow.device)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(
        img.to(flow.dtype), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True
    )


def fb_occlusion(bwd: Tensor, fwd: Tensor, alpha: float = 0.01, beta: float = 0.5) -> Tensor:
    """Occlusion mask of frame t (``True`` = exclude), from the forward-backward consistency check.

    ``bwd`` is the flow t -> t-1 (in frame t's pixels), ``fwd`` the flow t-1 -> t (in frame t-1's pixels). A pixel p
    of frame t is consistent when following ``bwd`` and then ``fwd`` returns to p:
    ``|bwd(p) + fwd(q)| <= alpha * (|bwd(p)| + |fwd(q)|) + beta`` with ``q = p + bwd(p)`` (bilinear lookup); pixels
    whose ``q`` falls outside frame t-1 are occluded (they have no source). alpha=0.01, beta=0.5 px follow UnFlow
    as StreamV2V's script does (with non-squared norms, as that script uses).
    """
    _, _, h, w = bwd.shape
    fwd_at_q = warp(fwd, bwd, padding_mode="border")
    diff = (bwd + fwd_at_q).norm(dim=1)
    thresh = alpha * (bwd.norm(dim=1) + fwd_at_q.norm(dim=1)) + beta
    xs, ys = _grid(h, w, bwd.dtype, bwd.device)
    qx, qy = xs + bwd[:, 0], ys + bwd[:, 1]
    outside = (qx < 0) | (qx > w - 1) | (qy < 0) | (qy > h - 1)
    return (diff > thresh) | outside
