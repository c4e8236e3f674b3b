"""LPIPS between each output frame and its input frame (structure preservation), lower is better.

``lpips(O_t, I_t)`` per frame with the ``lpips`` package's AlexNet model (v0.1 linear layers), frames in [0, 1] mapped
to [-1, 1] (``normalize=True``), at the frames' own resolution, spatially averaged; the video's value is the mean
over frames. Weights come from one local file holding the trunk and the linear layers (build it with
``python -m eval.metrics.convert_lpips_weights``); nothing is downloaded. Without that file the metric refuses to
start, so the default metric set leaves it out (``+metrics/add=lpips`` or ``+metrics/add=paper`` adds it:
``conf/metrics/add/``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from eval.metrics.base import VideoMetric, check_pair, reduce_scores
from eval.weights import load_state_dict

log = logging.getLogger(__name__)

CONFIG_KEY = "metrics.lpips.weights"
HOW_TO = (
    "build it with `python -m eval.metrics.convert_lpips_weights --out weights/lpips_alex.safetensors` "
    f"and set {CONFIG_KEY}=weights/lpips_alex.safetensors"
)


def load_lpips(weights: str | None, device: str = "cpu", config_key: str = CONFIG_KEY) -> torch.nn.Module:
    """``lpips.LPIPS(net="alex")`` with every weight (trunk and linear layers) from ``weights``."""
    import warnings

    import lpips

    if weights is None:
        raise ValueError(f"lpips needs local AlexNet-LPIPS weights; {HOW_TO}")
    sd = load_state_dict(weights, config_key, "LPIPS")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's deprecation of `pretrained=False`
        model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(("scaling_layer.", "lins."))]
    if missing or unexpected:
        raise ValueError(
            f"{weights} ({config_key}) is not an AlexNet-LPIPS state dict: missing {missing}, "
            f"unexpected {unexpected}; {HOW_TO}"
        )
    return model.eval().to(device)


@torch.no_grad()
def lpips(
    frames: Tensor,
    source_frames: Tensor,
    *,
    weights: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    model: torch.nn.Module | None = None,
    reduction: str = "mean",
) -> Tensor:
    """LPIPS (AlexNet, v0.1) between each frame of one video and the frame of the same index of another.

    Args:
        frames: the output video ``[T, 3, H, W]``, float in [0, 1].
        source_frames: the video it is compared with (its input), the same shape.
        weights: one local file with the AlexNet trunk and the linear layers (``python -m
            eval.metrics.convert_lpips_weights``); required unless ``model`` is given.
        device: where the network runs.
        batch_size: frame pairs per forward pass (does not change the values).
        model: an ``lpips.LPIPS`` already loaded (:func:`load_lpips`): then ``weights`` is not used.
        reduction: ``"mean"``: the video's value (mean over frames); ``"none"``: the ``[T]`` frame scores.

    Returns:
        A float64 scalar (``"mean"``) or ``[T]`` tensor (``"none"``), on the CPU.

    Raises:
        ValueError: a video is not ``[T, 3, H, W]`` or the two differ in shape; neither ``weights`` nor ``model``;
            a file that is not an AlexNet-LPIPS state dict; an unknown ``reduction``.
        MissingWeightsError: no file at ``weights``.

    >>> import torch
    >>> video = torch.rand(2, 3, 32, 32)
    >>> lpips(video, video)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: lpips needs local AlexNet-LPIPS weights; build it with `python -m eval.metrics.convert_lpips_weights ...
    >>> import warnings
    >>> import lpips as lpips_package  # any LPIPS network, e.g. one with random weights:
    >>> with warnings.catch_warnings():  # torchvision's deprecation of `pretrained=False`
    ...     warnings.simplefilter("ignore", UserWarning)
    ...     net = lpips_package.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    >>> lpips(video, video, model=net).item()  # identical frames: no perceptual distance
    0.0
    """
    check_pair(frames, source_frames, "lpips")
    model = model if model is not None else load_lpips(weights, device)
    out = []
    for i in range(0, frames.shape[0], batch_size):
        a = frames[i : i + batch_size].to(device, torch.float32)
        b = source_frames[i : i + batch_size].to(device, torch.float32)
        out.append(model(a, b, normalize=True).flatten())
    return reduce_scores(torch.cat(out).double().cpu(), reduction, "lpips")


class LPIPS(VideoMetric):
    """LPIPS of each output frame to its input frame. Functional twin: :func:`lpips`."""

    higher_is_better = False
    display_name = "LPIPS (to input)"
    unit = ""
    context_frames = 0

    def __init__(
        self, weights: str | None = None, device: str = "cpu", batch_size: int = 8, **kwargs: Any
    ) -> None:
        """Args: ``weights``, ``device``, ``batch_size`` as :func:`lpips` (``weights`` required); ``kwargs``:
        torchmetrics ``Metric`` options. Raises as :func:`lpips` when the weights are missing or do not fit."""
        super().__init__(**kwargs)
        self.model = load_lpips(weights, device)
        self.weights, self.device_name, self.batch_size = weights, device, batch_size

    def config(self) -> dict[str, Any]:
        return {"net": "alex", "version": "0.1", "weights": str(self.weights)}

    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        return lpips(
            output,
            source,
            model=self.model,
            device=self.device_name,
            batch_size=self.batch_size,
            reduction="none",
        )
