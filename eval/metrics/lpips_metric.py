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

from eval.metrics.base import VideoMetric
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


class LPIPS(VideoMetric):
    higher_is_better = False
    display_name = "LPIPS (to input)"
    unit = ""
    context_frames = 0

    def __init__(
        self, weights: str | None = None, device: str = "cpu", batch_size: int = 8, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.model = load_lpips(weights, device)
        self.weights, self.device_name, self.batch_size = weights, device, batch_size

    def config(self) -> dict[str, Any]:
        return {"net": "alex", "version": "0.1", "weights": str(self.weights)}

    @torch.no_grad()
    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        out = []
        for i in range(0, output.shape[0], self.batch_size):
            a = output[i : i + self.batch_size].to(self.device_name, torch.float32)
            b = source[i : i + self.batch_size].to(self.device_name, torch.float32)
            out.append(self.model(a, b, normalize=True).flatten())
        return torch.cat(out).double().cpu()
