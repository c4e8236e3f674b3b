"""``DPTDepth``: transformers' DPT (MiDaS DPT-Hybrid / DPT-Large) behind one call, shared by the ``depth_error``
metric and Live2Diff's depth branch (``live2diff/components/depth.py``) — a neutral module, so the model side
imports no metric and ``eval`` never imports ``live2diff``."""

from __future__ import annotations

from torch import Tensor, nn


class DPTDepth(nn.Module):
    """``[B,3,H,W]`` in [0,1] -> relative inverse depth ``[B,H,W]`` from a transformers ``DPTForDepthEstimation``.

    Args:
        model: a ``DPTForDepthEstimation`` (loaded from a local folder, or random for speed runs).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images01: Tensor) -> Tensor:
        x = (images01 - 0.5) / 0.5  # DPT's image processor normalises with mean=std=0.5
        return self.model(pixel_values=x).predicted_depth
