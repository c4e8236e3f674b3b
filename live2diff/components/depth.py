"""Depth conditioning: the depth estimator (MiDaS DPT or a tiny random stand-in), the reference's depth mapping
network, and the VAE-encoded depth latents the mapper consumes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eval.depth import DPTDepth  # the one DPT wrapper (the depth_error metric's too)
from live2diff.components.config import get
from live2diff.components.vae import vae_encode


class TinyDepthNet(nn.Module):
    """Random stand-in for MiDaS: ``[B,3,H,W]`` in [0,1] -> relative depth ``[B,H,W]`` (same call shape as DPT)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, 1, 3, padding=1),
        )

    def forward(self, images01: Tensor) -> Tensor:
        d = self.net(images01 * 2 - 1)
        return F.interpolate(d, size=images01.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


class DepthEstimator(nn.Module):
    """Frame -> 3-channel depth image in [-1, 1] at frame size (what the VAE then encodes), as the reference's
    ``encode_depth`` does: resize to the depth net's resolution, predict (:meth:`raw`), min-max normalise, repeat to
    3 channels, resize back (:meth:`normalise`).

    The reference min-max normalises over each call's whole batch (``depth_map.min()``): the 8 warmup frames
    jointly, then one frame per streaming call. ``joint=False`` normalises each frame on its own."""

    def __init__(self, net: nn.Module, resolution: int):
        super().__init__()
        self.net = net
        self.resolution = int(resolution)

    def raw(self, frames01: Tensor) -> Tensor:
        """The depth net's prediction ``[B, r, r]`` (float32) at its resolution ``r``."""
        x = F.interpolate(frames01, (self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return self.net(x).float()

    @staticmethod
    def normalise(depth: Tensor, size: tuple[int, int], joint: bool = False) -> Tensor:
        """Raw depth ``[B, r, r]`` -> ``[B, 3, *size]`` in [-1, 1]: min-max over the batch (``joint``) or per frame."""
        flat = depth.flatten(0 if joint else 1)
        lo = flat.min(-1).values.reshape(-1, 1, 1)
        hi = flat.max(-1).values.reshape(-1, 1, 1)
        d = (depth - lo) / (hi - lo).clamp_min(1e-6)
        d = d[:, None].repeat(1, 3, 1, 1) * 2 - 1
        return F.interpolate(d, size, mode="bilinear", align_corners=False)

    def forward(self, frames01: Tensor, joint: bool = False) -> Tensor:
        d = self.normalise(self.raw(frames01), tuple(frames01.shape[-2:]), joint)
        return d.to(frames01.dtype)


class MappingNetwork(nn.Module):
    """The reference's depth "mapping network": VAE depth latent -> features added to ``conv_in``'s output.

    Same layout and parameter names as the reference's ``flow_conv_in`` (conv_in, blocks.{0..5}, conv_out), so its
    checkpoint keys map one to one; ``conv_out`` starts at zero so an untrained mapper leaves the UNet unchanged."""

    def __init__(
        self, out_channels: int, in_channels: int = 4, block_out_channels: Sequence[int] = (16, 32, 96, 256)
    ):
        super().__init__()
        ch = list(block_out_channels)
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for a, b in zip(ch[:-1], ch[1:]):
            self.blocks.append(nn.Conv2d(a, a, 3, padding=1))
            self.blocks.append(nn.Conv2d(a, b, 3, padding=1))
        self.conv_out = nn.Conv2d(ch[-1], out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, depth_latent: Tensor) -> Tensor:
        x = F.silu(self.conv_in(depth_latent))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


def dpt_hybrid_config(res: int = 384):
    """MiDaS DPT-Hybrid (ViT-B/16 on a BiT backbone, ~122M parameters, the reference's dpt_hybrid_384) in
    transformers' ``DPTConfig`` (the values of Intel/dpt-hybrid-midas's config.json)."""
    from transformers import DPTConfig

    return DPTConfig(
        is_hybrid=True,
        image_size=res,
        backbone_featmap_shape=[1, 1024, res // 16, res // 16],
        neck_ignore_stages=[0, 1],
        readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5],
        neck_hidden_sizes=[256, 512, 768, 768],
        backbone_out_indices=[2, 5, 8, 11],
    )


def build_depth(cfg: dict, kind: str, path: Path | None) -> DepthEstimator:
    res = int(get(cfg, "depth.resolution", 384))
    if kind == "tiny":
        return DepthEstimator(TinyDepthNet(int(get(cfg, "depth.channels", 8))), res)
    if kind == "dpt":
        from transformers import DPTConfig, DPTForDepthEstimation

        if path is not None:
            return DepthEstimator(
                DPTDepth(DPTForDepthEstimation.from_pretrained(path, local_files_only=True)), res
            )
        # Random DPT for speed runs without weights: DPT-Hybrid (the reference's) or DPT-Large.
        if str(get(cfg, "depth.arch", "hybrid")) == "hybrid":
            dpt_cfg = dpt_hybrid_config(res)
        else:
            dpt_cfg = DPTConfig(image_size=res)
        return DepthEstimator(DPTDepth(DPTForDepthEstimation(dpt_cfg)), res)
    raise ValueError(f"unknown depth kind '{kind}' (model.depth.kind); use tiny, dpt or none")


@torch.no_grad()
def depth_latents(comps: Any, frames01: Tensor, joint: bool = False) -> Tensor | None:
    """Depth image of each frame, VAE-encoded (what the mapping network consumes); None when depth is off.
    ``joint``: one min-max normalisation over the whole batch (the reference's warmup call)."""
    if comps.depth is None:
        return None
    d = comps.depth(frames01.to(comps.device, comps.dtype), joint=joint)
    return vae_encode(comps, (d + 1) / 2)


@torch.no_grad()
def depth_latents_from_raw(comps: Any, raw: Tensor, size: tuple[int, int], joint: bool = False) -> Tensor:
    """:func:`depth_latents` from raw predictions (:meth:`DepthEstimator.raw`) gathered over several pushes."""
    d = comps.depth.normalise(raw, size, joint).to(comps.dtype)
    return vae_encode(comps, (d + 1) / 2)
