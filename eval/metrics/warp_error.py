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
from eval.metrics.base import VideoMetric, check_pair, reduce_scores, with_context_head
from eval.metrics.flow import FlowEstimator, fb_occlusion, make_flow, warp

VARIANTS = ("l1", "streamv2v_compat", "lai2018", "mawe")
_NAMES = {
    "streamv2v_compat": (" [StreamV2V compat]", "L1 /255"),
    "lai2018": (" [Lai et al. 2018]", "MSE (0-1)"),
    "mawe": (" [StreamingT2V MAWE]", "MSE /255² ÷ (c·|flow|)"),
}


class WarpError(VideoMetric):
    """Warp error of each output frame (or of the input, ``frames="source"``), as the module docstring defines it.
    Functional twin: :func:`warp_error`; the class adds the runner's side: chunks held for ``lag`` / ``encode``
    and ``lag="auto"`` from the recorded emissions."""

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
        """Builds the flow estimator once; every video is then scored with it.

        Args:
            flow, variant, occlusion, dis_preset, raft_weights, raft_model, raft_iters, fb_alpha, fb_beta,
            device, batch_size, encode, mp4_fps, jpeg_quality, mawe_coeff, mawe_size: as :func:`warp_error`
                (the same names, meanings and defaults; ``metrics.warp_error.<name>`` in the config).
            frames: ``"output"`` scores the method's output; ``"source"`` the input video itself (the
                ``warp_error_input`` reference row: how smooth the source already is).
            lag: as :func:`warp_error`, or ``"auto"``: each method's own emissions, which the runner hands to
                :meth:`set_emissions` (``needs_emissions``) before ``update``.
            kwargs: torchmetrics ``Metric`` options.

        Raises:
            ValueError: an unknown ``frames``, ``variant``, ``encode`` or flow backend, a bad ``lag`` or
                ``mawe_size``; ``flow="raft"`` without ``raft_weights``.
            MissingWeightsError: no file at ``raft_weights``.
        """
        super().__init__(**kwargs)
        _check_settings(variant, lag, encode, mawe_size, allow_auto=True)
        if frames not in ("output", "source"):
            raise ValueError(
                f"warp_error frames must be 'output' or 'source' (the input reference), got {frames!r}"
            )
        self.flow = _flow(flow, dis_preset, raft_weights, raft_model, raft_iters, device, batch_size)
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
        img = source if self.frames == "source" else output  # lag / encode were applied in _score_pending
        return warp_error(
            img,
            source,
            flow=self.flow,
            variant=self.variant,
            occlusion=self.occlusion,
            fb_alpha=self.fb_alpha,
            fb_beta=self.fb_beta,
            mawe_coeff=self.mawe_coeff,
            mawe_size=self.mawe_size,
            reduction="none",
        )[1:]


def _check_settings(variant: str, lag: Any, encode: str, mawe_size: Any, allow_auto: bool = False) -> None:
    auto = lag == "auto" and allow_auto
    if not (auto or (isinstance(lag, int) and not isinstance(lag, bool) and lag >= 0)):
        raise ValueError(
            "warp_error lag must be 0, a number of frames"
            + (" or 'auto' (the emissions the runner recorded)" if allow_auto else "")
            + f", got {lag!r}"
        )
    if encode not in wv.ENCODINGS:
        raise ValueError(f"warp_error encode must be one of {wv.ENCODINGS}, got {encode!r}")
    if mawe_size is not None and (len(mawe_size) != 2 or min(int(x) for x in mawe_size) < 1):
        raise ValueError(f"warp_error mawe_size must be [height, width] or null, got {mawe_size!r}")
    if variant not in VARIANTS:
        raise ValueError(f"warp_error variant must be one of {VARIANTS}, got {variant!r}")


def _flow(
    flow: str | FlowEstimator,
    dis_preset: str,
    raft_weights: str | None,
    raft_model: str,
    raft_iters: int,
    device: str,
    batch_size: int,
) -> FlowEstimator:
    if not isinstance(flow, str):
        return flow
    return make_flow(
        flow,
        dis_preset=dis_preset,
        raft_weights=raft_weights,
        raft_model=raft_model,
        raft_iters=raft_iters,
        device=device,
        batch_size=batch_size,
    )


def warp_error(
    frames: Tensor,
    source_frames: Tensor,
    *,
    flow: str | FlowEstimator = "dis",
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
    lag: int = 0,
    encode: str = "none",
    mp4_fps: float = 24.0,
    jpeg_quality: int = 95,
    mawe_coeff: float = 9.5,
    mawe_size: list[int] | tuple[int, int] | None = (720, 720),
    reduction: str = "mean",
) -> Tensor:
    """Warp error of one video (module docstring): how much its consecutive frames disagree once the motion of
    ``source_frames`` is compensated; lower is smoother.

    Args:
        frames: the video scored ``[T, 3, H, W]`` in [0, 1] (a method's output; the input itself for the input's
            own reference figure: ``warp_error(source, source)``).
        source_frames: the input video it was made from, the same shape: the flow is estimated on it, never on
            ``frames`` (``variant="mawe"`` estimates it on ``frames``, as StreamingT2V does).
        flow: ``"dis"`` (OpenCV DIS on luma, weight-free), ``"farneback"``, ``"raft"`` (torchvision RAFT from
            ``raft_weights``), or a :class:`~eval.metrics.flow.FlowEstimator` already built (``make_flow``).
        variant: ``"l1"`` (the definition above), ``"streamv2v_compat"``, ``"lai2018"``, ``"mawe"`` (the
            published scripts' arithmetic, for comparison with their numbers only).
        occlusion: drop the pixels the forward-backward check finds occluded (``False``: keep every pixel).
        dis_preset: DIS's ``ultrafast`` | ``fast`` | ``medium``.
        raft_weights: a local RAFT file (torchvision ``.pth`` state dict or ``.safetensors``); needed for ``raft``.
        raft_model: ``large`` | ``small`` (the architecture of ``raft_weights``).
        raft_iters: RAFT's refinement iterations.
        fb_alpha, fb_beta: the forward-backward check's relative and absolute tolerance (UnFlow's 0.01, 0.5 px).
        device: where RAFT runs (OpenCV flow always runs on the CPU).
        batch_size: frame pairs per RAFT call (does not change the values).
        lag: score the video a store-call-i-at-index-i script writes, ``lag`` frames behind (0: as emitted).
        encode: ``"none"``, ``"mp4"`` (StreamV2V's ``write_video`` round trip) or ``"jpeg"`` (Lai et al.'s
            ``save_img``): re-encode ``frames`` first, as the script's pipeline stored them.
        mp4_fps, jpeg_quality: the settings of that re-encoding.
        mawe_coeff, mawe_size: StreamingT2V MAWE's divisor coefficient and frame size (``variant="mawe"``).
        reduction: ``"mean"``: the video's value (mean over the scored pairs); ``"none"``: ``[T]`` frame scores,
            NaN for frame 0 and for a frame without a valid pixel.

    Returns:
        A float64 scalar (``"mean"``; NaN for a single frame) or ``[T]`` tensor (``"none"``), on the CPU.

    Raises:
        ValueError: a video is not ``[T, 3, H, W]`` or the two differ in shape; an unknown ``variant``,
            ``encode``, flow backend or ``reduction``; a bad ``lag`` or ``mawe_size``; ``raft`` without weights.
        MissingWeightsError: no file at ``raft_weights``.

    >>> import torch
    >>> still = torch.rand(1, 3, 32, 32).repeat(3, 1, 1, 1)  # nothing moves, nothing flickers
    >>> [round(x, 2) for x in warp_error(still, still, reduction="none").tolist()]
    [nan, 0.0, 0.0]
    >>> flicker = (still + 0.1 * torch.rand(3, 3, 32, 32)).clamp(0, 1)  # each frame its own noise
    >>> bool(warp_error(flicker, still) > 5 * warp_error(still, still))
    True
    """
    check_pair(frames, source_frames, "warp_error")
    _check_settings(variant, lag, encode, mawe_size)
    est = _flow(flow, dis_preset, raft_weights, raft_model, raft_iters, device, batch_size)
    src = source_frames.detach().float().cpu()
    img = frames.detach().float().cpu()
    if lag != 0:
        img = wv.stored_video(img, wv.fixed_lag(img.shape[0], int(lag)))
    img = wv.encode(img, encode, fps=mp4_fps, jpeg_quality=jpeg_quality)
    if img.shape[0] < 2:
        scores = torch.zeros(0, dtype=torch.float64)
    elif variant == "mawe":
        scores = _mawe(img, est, mawe_coeff, mawe_size)
    else:
        scores = _pair_scores(img, src, est, variant, occlusion, fb_alpha, fb_beta)
    return reduce_scores(with_context_head(scores, img.shape[0], 1), reduction, "warp_error")


def _pair_scores(
    img: Tensor,
    src: Tensor,
    flow: FlowEstimator,
    variant: str,
    occlusion: bool,
    fb_alpha: float,
    fb_beta: float,
) -> Tensor:
    """The score of each pair (t-1, t) of ``img``, flow on ``src`` (every variant but ``mawe``)."""
    bwd = flow(src[1:], src[:-1])
    fwd = flow(src[:-1], src[1:]) if (occlusion or variant != "l1") else None
    if variant == "streamv2v_compat":
        return torch.tensor(
            [
                _streamv2v_pair(img[i], img[i + 1], bwd[i], fwd[i], fb_alpha, fb_beta, occlusion)
                for i in range(bwd.shape[0])
            ],
            dtype=torch.float64,
        )
    if variant == "lai2018":
        return torch.tensor(
            [wv.lai2018_pair(img[i], img[i + 1], fwd[i], bwd[i], occlusion) for i in range(bwd.shape[0])],
            dtype=torch.float64,
        )
    if occlusion:
        valid = ~fb_occlusion(bwd, fwd, fb_alpha, fb_beta)
    else:
        valid = torch.ones(bwd.shape[0], *bwd.shape[2:], dtype=torch.bool)
    err = (warp(img[:-1], bwd) - img[1:]).abs().mean(dim=1).double() * 255.0
    n = valid.sum(dim=(1, 2))
    total = (err * valid).sum(dim=(1, 2))
    return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, float("nan")))


def _mawe(img: Tensor, flow: FlowEstimator, coeff: float, size: list[int] | tuple[int, int] | None) -> Tensor:
    """StreamingT2V's ``get_mawe`` per pair: the scored video as uint8, resized to ``size``, flow left -> right
    estimated on it (``flow`` backend), :func:`warp_variants.mawe_pair`."""
    u8 = (img.clamp(0, 1) * 255.0).round().to(torch.uint8)
    if size is not None:
        u8 = wv.resize_u8(u8, size)
    f = u8.float() / 255.0
    pair_flow = flow(f[:-1], f[1:])
    return torch.tensor(
        [wv.mawe_pair(u8[i], u8[i + 1], pair_flow[i], coeff)[0] for i in range(pair_flow.shape[0])],
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
