"""A deliberately simple temporal metric: it exercises the metric pipeline end to end with no model."""

from __future__ import annotations

from torch import Tensor

from eval.metrics.base import VideoMetric


class MeanAbsFrameDiff(VideoMetric):
    """Mean absolute difference between consecutive output frames, on the [0, 255] scale (no motion compensation,
    so it mixes real motion with flicker; use ``warp_error`` to separate them)."""

    higher_is_better = False
    display_name = "Frame diff"
    unit = "/255"
    context_frames = 1

    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        out = output.float()
        return (out[1:] - out[:-1]).abs().mean(dim=(1, 2, 3)).double() * 255.0
