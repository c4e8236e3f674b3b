"""Depth error: how far the output's scene structure is from the input's (structure consistency), lower is better.

The paper's third axis besides temporal smoothness and efficiency is believed to be a depth-map error between input
and output (shared LIVE2DIFF_FACTS.md: not verified). Definition used here, per frame t:

1. ``D_in = depth(I_t)``, ``D_out = depth(O_t)``: relative inverse depth from a MiDaS-style DPT model (transformers
   ``DPTForDepthEstimation``, e.g. Intel/dpt-hybrid-midas, the model Live2Diff conditions on), both frames resized
   to ``resolution`` x ``resolution`` (384 for DPT, as Live2Diff's depth branch);
2. MiDaS predictions are defined only up to an unknown scale and shift, so both maps are normalised: ``D_in`` is
   standardised (zero mean, unit variance over the frame) and ``D_out`` is fitted to it by least squares,
   ``(s, b) = argmin sum_p (s D_out(p) + b - D_in(p))^2`` — the MiDaS evaluation's scale-and-shift alignment;
3. ``E_t = mean_p (s D_out(p) + b - D_in(p))^2``, the mean squared error of the aligned maps.

With the input standardised, ``E_t = 1 - rho_t^2`` where ``rho_t`` is the Pearson correlation of the two depth maps:
0 when the output's depth is an affine copy of the input's, 1 when it is unrelated (or flat), never above 1. NaN when
the input's depth map is constant (nothing to compare with). The video's value is the mean over frames.

Weights: ``weights=/path/dpt-hybrid-midas`` (a transformers DPT folder; the paper experiment points it at
``model.weights.depth``). Without it a tiny random-init depth net (fixed seed) stands in so that everything runs
offline; its values are marked "not comparable" (they still measure how much structure survives, through random
features, which is what the validation checks).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eval.depth import DPTDepth
from eval.metrics.base import VideoMetric, check_pair, reduce_scores

log = logging.getLogger(__name__)

CONFIG_KEY = "metrics.depth_error.weights"
RANDOM_NOTE = "random depth net — not comparable"


class RandomDepthNet(nn.Module):
    """The metric's random stand-in for MiDaS: ``[B, 3, S, S]`` in [0, 1] -> ``[B, S, S]``; a few strided convs so
    that its output depends on a neighbourhood (structure), not on single pixels. (Not the model's depth stand-in,
    :class:`live2diff.components.depth.TinyDepthNet`, which conditions the tiny model.)"""

    def __init__(self, channels: int = 8):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, c, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, 1, 3, padding=1),
        )

    def forward(self, images01: Tensor) -> Tensor:
        d = self.net(images01 * 2 - 1)
        return F.interpolate(d, size=images01.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


_CACHE: dict[tuple, nn.Module] = {}
_LOCK = threading.Lock()


def load_depth_net(weights: str | None, device: str = "cpu", config_key: str = CONFIG_KEY) -> nn.Module:
    """The depth model (loaded once per process per folder/device): DPT from a local folder, or the tiny random net."""
    from pathlib import Path

    if weights:
        p = Path(weights).expanduser()
        if not (p / "config.json").is_file():
            raise FileNotFoundError(
                f"depth_error: {p} is not a transformers DPT folder (no config.json) (set by {config_key}; "
                "e.g. a local copy of Intel/dpt-hybrid-midas — the folder model.weights.depth uses)"
            )
    key = (str(weights) if weights else None, str(device))
    with _LOCK:
        if key not in _CACHE:
            if weights:
                from transformers import DPTForDepthEstimation

                net = DPTDepth(DPTForDepthEstimation.from_pretrained(str(weights), local_files_only=True))
            else:
                log.warning("depth_error: no weights given (%s); using a tiny random depth net", config_key)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    net = RandomDepthNet()
            _CACHE[key] = net.eval().to(device)
        return _CACHE[key]


def aligned_mse(d_in: Tensor, d_out: Tensor) -> Tensor:
    """Per-frame MSE after standardising ``d_in`` and least-squares scale-and-shift fitting ``d_out`` to it.

    ``d_in``, ``d_out``: ``[N, H, W]``; returns ``[N]`` float64 (NaN where ``d_in`` is constant)."""
    a = d_in.flatten(1).double()
    b = d_out.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    std = a.pow(2).mean(1, keepdim=True).sqrt()
    a = a / std.clamp_min(1e-12)
    b = b - b.mean(1, keepdim=True)
    var_b = b.pow(2).mean(1, keepdim=True)
    s = torch.where(
        var_b > 1e-24, (a * b).mean(1, keepdim=True) / var_b.clamp_min(1e-24), torch.zeros_like(var_b)
    )
    err = (s * b - a).pow(2).mean(1)  # the shift is absorbed by centring both maps
    return torch.where(std[:, 0] > 1e-12, err, torch.full_like(err, float("nan")))


@torch.no_grad()
def depth_maps(
    frames: Tensor, net: nn.Module, resolution: int, *, batch_size: int = 8, device: str = "cpu"
) -> Tensor:
    """``[N, 3, H, W]`` in [0, 1] -> relative depth ``[N, S, S]`` (float32, on the CPU) from ``net`` (a
    :class:`~eval.depth.DPTDepth` or the random stand-in, as :func:`load_depth_net` returns), frames resized
    (antialiased bilinear) to ``resolution`` x ``resolution``."""
    out = []
    for i in range(0, frames.shape[0], batch_size):
        x = frames[i : i + batch_size].to(device, torch.float32).clamp(0, 1)
        x = F.interpolate(x, (resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        d = net(x).float()
        if d.shape[-2:] != (resolution, resolution):
            d = F.interpolate(d[:, None], (resolution,) * 2, mode="bilinear", align_corners=False)[:, 0]
        out.append(d.cpu())
    return torch.cat(out)


def depth_error(
    frames: Tensor,
    source_frames: Tensor,
    *,
    weights: str | None = None,
    resolution: int | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    net: nn.Module | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Structure consistency of one video: per frame, the MSE between the source's standardised depth map and the
    output's, least-squares scale-and-shift fitted to it (``1 - r^2``: 0 = the same structure, 1 = unrelated).

    Args:
        frames: the output video ``[T, 3, H, W]``, float in [0, 1].
        source_frames: the video it was made from, the same shape.
        weights: a transformers DPT folder (e.g. Intel/dpt-hybrid-midas); ``None``: a tiny random depth net
            (seed 0) whose values are not comparable with anything published.
        resolution: the depth model's input size; ``None``: 384 with DPT weights, 64 for the random net.
        device: where the depth model runs.
        batch_size: frames per forward pass (does not change the values).
        net: a depth model already loaded (:func:`load_depth_net`): then ``weights`` is not used (give
            ``resolution``: 64 otherwise).
        reduction: ``"mean"``: the video's value (mean over the frames with a score); ``"none"``: ``[T]`` frame
            scores, NaN where the source's depth map is constant.

    Returns:
        A float64 scalar (``"mean"``) or ``[T]`` tensor (``"none"``), on the CPU.

    Raises:
        ValueError: a video is not ``[T, 3, H, W]`` or the two differ in shape; an unknown ``reduction``.
        FileNotFoundError: ``weights`` is not a DPT folder (no ``config.json``).

    >>> import torch
    >>> video = torch.rand(2, 3, 64, 64)
    >>> round(depth_error(video, video).item(), 6)  # the same frames: the same structure
    0.0
    >>> 0 < depth_error(torch.rand(2, 3, 64, 64), video).item() <= 1
    True
    """
    check_pair(frames, source_frames, "depth_error")
    net = net if net is not None else load_depth_net(weights, device)
    res = int(resolution or (384 if weights else 64))
    d_src = depth_maps(source_frames, net, res, batch_size=batch_size, device=device)
    scores = aligned_mse(d_src, depth_maps(frames, net, res, batch_size=batch_size, device=device))
    return reduce_scores(scores, reduction, "depth_error")


class DepthError(VideoMetric):
    """Depth error of each output frame against its input frame (module docstring). Functional twin:
    :func:`depth_error`."""

    higher_is_better = False
    display_name = "Depth error"
    unit = "MSE (aligned)"
    context_frames = 0

    def __init__(
        self,
        weights: str | None = None,
        resolution: int | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        require_weights: bool = False,
        **kwargs: Any,
    ) -> None:
        """Loads (or reuses) the depth model once; every video is then scored with it.

        Args:
            weights, resolution, device, batch_size: as :func:`depth_error`.
            require_weights: refuse ``weights=None`` instead of falling back to the random depth net.
            kwargs: torchmetrics ``Metric`` options.

        Raises:
            ValueError: ``require_weights`` without ``weights``.
            FileNotFoundError: ``weights`` is not a DPT folder.
        """
        super().__init__(**kwargs)
        if require_weights and not weights:
            raise ValueError(
                f"depth_error: real DPT weights are required here (no random fallback); set {CONFIG_KEY}="
                "/path/to/dpt-hybrid-midas (a transformers DPT folder, the one model.weights.depth uses)"
            )
        self.net = load_depth_net(weights, device)
        self.weights, self.device_name, self.batch_size = weights, str(device), int(batch_size)
        self.resolution = int(resolution or (384 if weights else 64))
        self.comparable = bool(weights)
        self.notes = () if weights else (RANDOM_NOTE,)

    def config(self) -> dict[str, Any]:
        model = f"dpt ({self.weights})" if self.weights else "tiny random depth net (seed 0)"
        return {
            "model": model,
            "resolution": self.resolution,
            "normalisation": "lsq scale+shift to standardised input",
        }

    def depth(self, frames: Tensor) -> Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> relative depth ``[N, S, S]`` (float32) at the metric's resolution."""
        return depth_maps(
            frames, self.net, self.resolution, batch_size=self.batch_size, device=self.device_name
        )

    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        return depth_error(
            output,
            source,
            net=self.net,
            resolution=self.resolution,
            batch_size=self.batch_size,
            device=self.device_name,
            reduction="none",
        )
