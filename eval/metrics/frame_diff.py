"""A deliberately simple temporal metric: it exercises the metric pipeline end to end with no model."""

from __future__ import annotations

from torch import Tensor

from eval.metrics.base import VideoMetric, check_video, reduce_scores, with_context_head


def frame_diff(frames: Tensor, *, reduction: str = "mean") -> Tensor:
    """Mean absolute difference between consecutive frames of one video, on the [0, 255] scale.

    No motion compensation: real motion counts as much as flicker (``warp_error`` separates them).

    Args:
        frames: one video ``[T, 3, H, W]``, float in [0, 1].
        reduction: ``"mean"``: the video's value (mean over frames 1..T-1); ``"none"``: ``[T]`` frame scores,
            NaN for frame 0 (nothing before it).

    Returns:
        A float64 scalar (``"mean"``; NaN for a single frame) or ``[T]`` tensor (``"none"``).

    Raises:
        ValueError: ``frames`` is not ``[T, 3, H, W]``, or ``reduction`` is unknown.

    >>> import torch
    >>> video = torch.zeros(3, 3, 4, 4)
    >>> video[1:] = 0.5  # one change of half the range, then a still frame
    >>> frame_diff(video, reduction="none").tolist()
    [nan, 127.5, 0.0]
    >>> float(frame_diff(video))
    63.75
    """
    check_video(frames, "frame_diff")
    out = frames.float()
    scores = (out[1:] - out[:-1]).abs().mean(dim=(1, 2, 3)).double() * 255.0
    return reduce_scores(with_context_head(scores, frames.shape[0], 1), reduction, "frame_diff")


class MeanAbsFrameDiff(VideoMetric):
    """Mean absolute difference between consecutive output frames, on the [0, 255] scale (no motion compensation,
    so it mixes real motion with flicker; use ``warp_error`` to separate them). Functional twin:
    :func:`frame_diff`."""

    higher_is_better = False
    display_name = "Frame diff"
    unit = "/255"
    context_frames = 1

    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        return frame_diff(output, reduction="none")[1:]
