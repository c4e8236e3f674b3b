"""Warp error: how much consecutive frames disagree after motion compensation (flicker), lower is better.

Definition (``variant="l1"``, the default). For each pair (t-1, t), t >= 1, of a video with frames ``O_t`` (the
method's *output*; or the *input* video itself with ``frames="source"``, the reference row):

1. estimate optical flow on the **input** frames ``I``: backward ``b_t = flow(I_t -> I_{t-1})`` and forward
   ``f_t = flow(I_{t-1} -> I_t)`` (see ``eval.metrics.flow`` for the convention);
2. occlusion mask ``M_t`` (``fb_occlusion``): p is valid when ``|b_t(p) + f_t(q)| <= 0.01 (|b_t(p)| + |f_t(q)|) + 0.5``
   with ``q = p + b_t(p)`` inside the frame; all pixels are valid with ``occlusion=False``;
3. warp ``W_t(p) = O_{t-1}(p + b_t(p))`` (bilinear, float, no rounding);
4. ``E_t = 255 / (3 |V_t|) * sum_{p in V_t} sum_c |W_t(p, c) - O_t(p, c)|`` over the valid pixels ``V_t``: the mean
   absolute difference on the 0-255 scale (frames in [0, 1] are multiplied by 255). NaN when no pixel is valid.

The video's value is the mean of ``E_t`` over t (``compute``), as in StreamV2V's script, which then averages videos.

``variant="streamv2v_compat"`` reproduces that published script's arithmetic, for comparison with numbers computed
by it (use ``flow=raft`` with RAFT-large weights to match it fully): frames rounded to uint8, warped with
``cv2.remap`` (bilinear, uint8 result, black outside), the occlusion mask taken in frame t-1's coordinates
(``|f(p) + b(p + f(p))| > 0.01 (|f(p)| + |b(p)|) + 0.5``, zero padding) but applied to the warped frame t, and the
difference taken in uint8, so ``|a - b|`` wraps around to ``(a - b) mod 256``. These are defects of the script; the
default variant fixes them.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from eval.metrics.base import VideoMetric
from eval.metrics.flow import FlowEstimator, fb_occlusion, make_flow, warp

VARIANTS = ("l1", "streamv2v_compat")


class WarpError(VideoMetric):
    higher_is_better = False
    display_name = "Warp error"
    unit = "L1 /255"
    context_frames = 1

    def __init__(
        self,
        flow: str | FlowEstimator = "dis",
        frames: str = "output",
        variant: str = "l1",
        occlusion: bool = True,
        dis_preset: str = "medium",
        raft_weights: str | None = None,
        raft_model: str = "large",
        raft_iters: int = 12,
        fb_alpha: float = 0.01,
        fb_beta: float = 0.5,
        device: str = "cpu",
        batch_size: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if frames not in ("output", "source"):
            raise ValueError(
                f"warp_error frames must be 'output' or 'source' (the input reference), got {frames!r}"
            )
        if variant not in VARIANTS:
            raise ValueError(f"warp_error variant must be one of {VARIANTS}, got {variant!r}")
        self.flow = (
            flow
            if not isinstance(flow, str)
            else make_flow(
                flow,
                dis_preset=dis_preset,
                raft_weights=raft_weights,
                raft_model=raft_model,
                raft_iters=raft_iters,
                device=device,
                batch_size=batch_size,
            )
        )
        self.frames, self.variant, self.occlusion = frames, variant, occlusion
        self.fb_alpha, self.fb_beta = fb_alpha, fb_beta
        self._flow_desc = {"flow": getattr(self.flow, "name", type(self.flow).__name__)}
        if self._flow_desc["flow"] == "dis":
            self._flow_desc["dis_preset"] = dis_preset
        if self._flow_desc["flow"] == "raft":
            self._flow_desc.update(raft_model=raft_model, raft_iters=raft_iters)
        if frames == "source":
            self.display_name = "Warp error (input)"
        notes = []
        if variant == "streamv2v_compat":
            self.display_name += " [StreamV2V compat]"
            notes.append(
                "StreamV2V script arithmetic (uint8 wrap-around, mask in frame t-1 coordinates); "
                "for comparison with published numbers only"
            )
        if not occlusion:
            notes.append("no occlusion mask")
        self.notes = tuple(notes)

    def config(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "variant": self.variant,
            "occlusion": self.occlusion,
            "fb_alpha": self.fb_alpha,
            "fb_beta": self.fb_beta,
            **self._flow_desc,
        }

    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        src = source.detach().float().cpu()
        img = src if self.frames == "source" else output.detach().float().cpu()
        bwd = self.flow(src[1:], src[:-1])
        fwd = self.flow(src[:-1], src[1:]) if (self.occlusion or self.variant != "l1") else None
        if self.variant == "streamv2v_compat":
            return torch.tensor(
                [
                    _streamv2v_pair(
                        img[i], img[i + 1], bwd[i], fwd[i], self.fb_alpha, self.fb_beta, self.occlusion
                    )
                    for i in range(bwd.shape[0])
                ],
                dtype=torch.float64,
            )
        if self.occlusion:
            valid = ~fb_occlusion(bwd, fwd, self.fb_alpha, self.fb_beta)
        else:
            valid = torch.ones(bwd.shape[0], *bwd.shape[2:], dtype=torch.bool)
        err = (warp(img[:-1], bwd) - img[1:]).abs().mean(dim=1).double() * 255.0
        n = valid.sum(dim=(1, 2))
        total = (err * valid).sum(dim=(1, 2))
        return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, float("nan")))


def _to_u8_hwc(frame: Tensor) -> np.ndarray:
    return np.ascontiguousarray((frame.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy())


def _streamv2v_pair(
    prev: Tensor, cur: Tensor, bwd: Tensor, fwd: Tensor, alpha: float, beta: float, occlusion: bool
) -> float:
    """One pair as StreamV2V's ``calculate_warp_error_video`` computes it (see the module docstring)."""
    h, w = bwd.shape[-2:]
    if occlusion:
        warped_bwd = warp(bwd[None], fwd[None], padding_mode="zeros")[0]
        diff = (fwd + warped_bwd).norm(dim=0)
        occ = (diff > alpha * (fwd.norm(dim=0) + bwd.norm(dim=0)) + beta).numpy()
    else:
        occ = np.zeros((h, w), dtype=bool)
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    grid = (np.stack((gx, gy), axis=2) + bwd.permute(1, 2, 0).numpy()).astype(np.float32)
    warped = cv2.remap(_to_u8_hwc(prev), grid, None, cv2.INTER_LINEAR)
    warped[occ] = 0
    keep = ~occ
    if not keep.any():
        return float("nan")
    return float(
        np.abs(warped - _to_u8_hwc(cur))[keep].mean()
    )  # uint8 difference wraps around, as in the script
