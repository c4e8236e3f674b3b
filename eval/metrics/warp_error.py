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

The other published scripts, and what their pipelines did to the frames before scoring, are options too
(``eval/metrics/warp_variants.py``; docs/metrics.md lists them): ``variant="lai2018"`` (Lai et al. 2018's
``evaluate_WarpError``), ``variant="mawe"`` (StreamingT2V's motion-aware warp error), ``lag`` (the video StreamV2V's
vid2vid script stores: call i's output at index i; ``"auto"`` from the emissions the runner recorded) and
``encode`` (``mp4``: StreamV2V's ``write_video`` round trip; ``jpeg``: Lai et al.'s ``save_img``). Each is named in
``config()``, so the settings table and every published figure's comparison see it.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from eval.metrics import warp_variants as wv
from eval.metrics.base import VideoMetric
from eval.metrics.flow import FlowEstimator, fb_occlusion, make_flow, warp

VARIANTS = ("l1", "streamv2v_compat", "lai2018", "mawe")
_NAMES = {
    "streamv2v_compat": (" [StreamV2V compat]", "L1 /255"),
    "lai2018": (" [Lai et al. 2018]", "MSE (0-1)"),
    "mawe": (" [StreamingT2V MAWE]", "MSE /255² ÷ (c·|flow|)"),
}


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
        lag: int | str = 0,
        encode: str = "none",
        mp4_fps: float = 24.0,
        jpeg_quality: int = 95,
        mawe_coeff: float = 9.5,
        mawe_size: list[int] | tuple[int, int] | None = (720, 720),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (lag == "auto" or (isinstance(lag, int) and not isinstance(lag, bool) and lag >= 0)):
            raise ValueError(
                f"warp_error lag must be 0, a number of frames or 'auto' (the emissions the runner recorded), "
                f"got {lag!r}"
            )
        if encode not in wv.ENCODINGS:
            raise ValueError(f"warp_error encode must be one of {wv.ENCODINGS}, got {encode!r}")
        if mawe_size is not None and (len(mawe_size) != 2 or min(int(x) for x in mawe_size) < 1):
            raise ValueError(f"warp_error mawe_size must be [height, width] or null, got {mawe_size!r}")
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
        self.lag, self.encode = lag, encode
        self.mp4_fps, self.jpeg_quality = float(mp4_fps), int(jpeg_quality)
        self.mawe_coeff = float(mawe_coeff)
        self.mawe_size = None if mawe_size is None else [int(x) for x in mawe_size]
        self.needs_emissions = lag == "auto"  # the runner hands the emission schedule to set_emissions()
        self._emitted_by: list[int] | None = None
        self._pending: list[tuple[Tensor, Tensor, str | None]] = []  # chunks held for lag / encode
        self._flow_desc = {"flow": getattr(self.flow, "name", type(self.flow).__name__)}
        if self._flow_desc["flow"] == "dis":
            self._flow_desc["dis_preset"] = dis_preset
        if self._flow_desc["flow"] == "raft":
            self._flow_desc.update(raft_model=raft_model, raft_iters=raft_iters)
        if frames == "source":
            self.display_name = "Warp error (input)"
        notes = []
        if variant in _NAMES:
            self.display_name += _NAMES[variant][0]
            self.unit = _NAMES[variant][1]
        if variant == "streamv2v_compat":
            notes.append(
                "StreamV2V script arithmetic (uint8 wrap-around, mask in frame t-1 coordinates); "
                "for comparison with published numbers only"
            )
        elif variant == "lai2018":
            notes.append(
                "Lai et al. 2018 evaluate_WarpError arithmetic (frame t warped to t-1, squared error, FlowNet2 "
                "occlusion and motion-boundary mask); for comparison with published numbers only"
            )
        elif variant == "mawe":
            notes.append(
                f"StreamingT2V MAWE (flow on the scored video itself, forward splat, squared error / "
                f"({self.mawe_coeff:g} x mean flow magnitude)); for comparison with published numbers only"
            )
        if lag != 0:
            notes.append(
                "scored on the lagged video a store-call-i-at-index-i script writes ("
                + ("each method's own emissions" if lag == "auto" else f"{lag} frames")
                + ")"
            )
        if encode != "none":
            notes.append(f"output re-encoded as {encode} before scoring, as the script's pipeline stored it")
        if not occlusion:
            notes.append("no occlusion mask")
        self.notes = tuple(notes)

    def config(self) -> dict[str, Any]:
        cfg = {
            "frames": self.frames,
            "variant": self.variant,
            "occlusion": self.occlusion,
            "fb_alpha": self.fb_alpha,
            "fb_beta": self.fb_beta,
            "lag": self.lag,
            "encode": self.encode,
            **self._flow_desc,
        }
        if self.encode == "mp4":
            cfg["mp4_fps"] = self.mp4_fps
        if self.encode == "jpeg":
            cfg["jpeg_quality"] = self.jpeg_quality
        if self.variant == "mawe":
            cfg.update(mawe_coeff=self.mawe_coeff, mawe_size=self.mawe_size)
        return cfg

    # -- the video the script scored: lag and re-encoding (one whole video per update) ----------------------------
    def set_emissions(self, emitted_by: list[int]) -> None:
        """``emitted_by[j]``: the push call that emitted output frame j (the number of frames for the flush); the
        runner calls this before ``update`` when ``needs_emissions`` (``lag="auto"``)."""
        self._emitted_by = [int(c) for c in emitted_by]

    def reset(self) -> None:
        super().reset()
        self._emitted_by = None
        self._pending = []

    def update(self, output: Tensor, source: Tensor, prompt: str | None = None) -> None:
        """With ``lag`` or ``encode`` the chunks of a video are held until its scores are read: the stored video
        (frame i may be an earlier frame's output) and a codec need the whole video, as the scripts had it."""
        if self.lag == 0 and self.encode == "none" or self.frames == "source":
            return super().update(output, source, prompt)
        if output.ndim != 4 or output.shape != source.shape:
            return super().update(output, source, prompt)  # the base class's error
        self._pending.append((output.detach().float().cpu(), source.detach().float().cpu(), prompt))

    def _score_pending(self) -> None:
        if not self._pending:
            return
        output = torch.cat([o for o, _, _ in self._pending])
        source = torch.cat([s for _, s, _ in self._pending])
        prompt = self._pending[0][2]
        self._pending = []
        n = output.shape[0]
        if self.lag == "auto":
            if self._emitted_by is None:
                raise ValueError(
                    "warp_error lag='auto' needs the emissions of the stream (set_emissions, called by the "
                    "runner); give a number of frames instead when scoring outside the runner"
                )
            emitted_by = self._emitted_by
        else:
            emitted_by = wv.fixed_lag(n, int(self.lag))
        if self.lag != 0:
            output = wv.stored_video(output, emitted_by)
        output = wv.encode(output, self.encode, fps=self.mp4_fps, jpeg_quality=self.jpeg_quality)
        super().update(output, source, prompt)

    def frame_scores(self) -> Tensor:
        self._score_pending()
        return super().frame_scores()

    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        src = source.detach().float().cpu()
        img = src if self.frames == "source" else output.detach().float().cpu()
        if self.variant == "mawe":
            return self._mawe(img)
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
        if self.variant == "lai2018":
            return torch.tensor(
                [
                    wv.lai2018_pair(img[i], img[i + 1], fwd[i], bwd[i], self.occlusion)
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

    def _mawe(self, img: Tensor) -> Tensor:
        """StreamingT2V's ``get_mawe`` per pair: the scored video as uint8, resized to ``mawe_size``, flow left ->
        right estimated on it (``flow`` backend), :func:`warp_variants.mawe_pair`."""
        u8 = (img.clamp(0, 1) * 255.0).round().to(torch.uint8)
        if self.mawe_size is not None:
            u8 = wv.resize_u8(u8, self.mawe_size)
        f = u8.float() / 255.0
        flow = self.flow(f[:-1], f[1:])
        return torch.tensor(
            [wv.mawe_pair(u8[i], u8[i + 1], flow[i], self.mawe_coeff)[0] for i in range(flow.shape[0])],
            dtype=torch.float64,
        )


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
