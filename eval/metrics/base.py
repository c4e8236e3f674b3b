"""Base class for per-video quality metrics.

Every metric is a torchmetrics ``Metric`` so it batches, accumulates over chunks and syncs across processes. It
declares once whether higher is better, a display name and a unit; the report reads these (arrows, bolding).

A metric scores *frames*: ``update(output, source, prompt=...)`` takes a chunk of consecutive frames ``[T, 3, H, W]``
(float in ``[0, 1]``) of one video and appends one score per output frame (NaN where a frame has no score, e.g. the
first frame of a pairwise metric). Pairwise metrics keep the previous chunk's last frame so that chunking never
changes the result. ``compute()`` is the mean over finite scores; ``frame_scores()`` returns them all.

Each metric module also has a functional twin of its metric (``frame_diff(frames)``, ``warp_error(frames,
source_frames, ...)``, ``clip_score(frames, prompt, ...)``, ...) for use outside the harness: one whole video in,
its value (``reduction="mean"``) or its frame scores (``"none"``) out. The ``Metric`` classes call them, so both
give the same numbers; the helpers below check their input and reduce alike.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

REDUCTIONS = ("mean", "none")


def check_video(frames: Tensor, name: str, what: str = "frames") -> None:
    """Refuse anything but one video ``[T, 3, H, W]`` (the functional metrics' input), naming the argument."""
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"{name}: {what} must be one video [T, 3, H, W] in [0, 1], got {shape}")


def check_pair(frames: Tensor, source_frames: Tensor, name: str) -> None:
    """Both videos ``[T, 3, H, W]`` and of the same shape."""
    check_video(frames, name)
    check_video(source_frames, name, "source_frames")
    if frames.shape != source_frames.shape:
        raise ValueError(
            f"{name}: frames and source_frames must have the same shape, got {tuple(frames.shape)} and "
            f"{tuple(source_frames.shape)}"
        )


def with_context_head(scores: Tensor, n_frames: int, context: int) -> Tensor:
    """``[T]`` float64 frame scores from the scores of frames ``context..T-1``: NaN for the first ``context``
    frames (they have no predecessor to be scored against)."""
    head = torch.full((min(context, n_frames),), float("nan"), dtype=torch.float64)
    return torch.cat([head, scores.to(torch.float64)]) if n_frames > context else head


def reduce_scores(scores: Tensor, reduction: str, name: str) -> Tensor:
    """``reduction="none"``: the ``[T]`` frame scores as they are; ``"mean"``: the video's value, the mean of the
    finite frame scores (NaN when there is none), exactly as :meth:`VideoMetric.compute` reduces them."""
    if reduction == "none":
        return scores
    if reduction != "mean":
        raise ValueError(f"{name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    s = scores[torch.isfinite(scores)]
    return s.mean() if s.numel() else torch.tensor(float("nan"), dtype=torch.float64)


class _class_or_instance_method:
    """Bind to the instance when called on one, to the class otherwise, so ``describe()`` works on both and an
    instance can report its own configuration (e.g. the input-video reference row, random-weight warnings)."""

    def __init__(self, func):
        self.func = func

    def __get__(self, obj, objtype=None):
        target = obj if obj is not None else objtype
        return self.func.__get__(target, objtype)


class VideoMetric(Metric):
    higher_is_better: ClassVar[bool]
    display_name: ClassVar[str] = ""
    unit: ClassVar[str] = ""
    is_differentiable = False
    full_state_update = False
    #: number of preceding frames a score depends on (1 for pairwise metrics); kept across ``update`` calls.
    context_frames: ClassVar[int] = 0

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self._prev_output: Tensor | None = None
        self._prev_source: Tensor | None = None

    # -- what a metric implements -------------------------------------------------------------------------------
    def score_frames(self, output: Tensor, source: Tensor, prompt: str | None) -> Tensor:
        """Scores for ``output[context_frames:]``; ``output``/``source`` include the context frames first."""
        raise NotImplementedError

    # -- torchmetrics API ---------------------------------------------------------------------------------------
    def update(self, output: Tensor, source: Tensor, prompt: str | None = None) -> None:
        if output.ndim != 4 or output.shape != source.shape:
            raise ValueError(
                f"{type(self).__name__}: output and source must both be [T, 3, H, W] of the same shape, "
                f"got {tuple(output.shape)} and {tuple(source.shape)}"
            )
        n_ctx = self.context_frames
        if n_ctx and self._prev_output is not None:
            out_in = torch.cat([self._prev_output, output])
            src_in = torch.cat([self._prev_source, source])
            scores = self.score_frames(out_in, src_in, prompt)
        elif n_ctx:
            head = torch.full((min(n_ctx, output.shape[0]),), float("nan"), dtype=torch.float64)
            rest = self.score_frames(output, source, prompt) if output.shape[0] > n_ctx else head[:0]
            scores = torch.cat([head, rest.to(torch.float64)])
        else:
            scores = self.score_frames(output, source, prompt)
        if n_ctx:
            self._prev_output = output[-n_ctx:].detach()
            self._prev_source = source[-n_ctx:].detach()
        self.scores.append(scores.detach().to(torch.float64).cpu())

    def compute(self) -> Tensor:
        s = self.frame_scores()
        s = s[torch.isfinite(s)]
        return s.mean() if s.numel() else torch.tensor(float("nan"), dtype=torch.float64)

    def frame_scores(self) -> Tensor:
        if isinstance(self.scores, Tensor):
            return self.scores
        return dim_zero_cat(self.scores) if self.scores else torch.zeros(0, dtype=torch.float64)

    def reset(self) -> None:
        super().reset()
        self._prev_output = None
        self._prev_source = None

    #: set ``False`` (per instance) when values cannot be compared with published numbers (random weights ...)
    comparable: ClassVar[bool] = True
    #: human-readable caveats shown beside the metric in tables and the report
    notes: ClassVar[tuple[str, ...]] = ()

    @_class_or_instance_method
    def describe(self_or_cls) -> dict[str, Any]:
        """What the report prints for this metric. On an instance it reflects that instance's configuration."""
        d = {
            "display_name": self_or_cls.display_name
            or getattr(self_or_cls, "__name__", type(self_or_cls).__name__),
            "unit": self_or_cls.unit,
            "higher_is_better": bool(self_or_cls.higher_is_better),
            "kind": "quality",
            "comparable": bool(self_or_cls.comparable),
            "notes": list(self_or_cls.notes),
        }
        if self_or_cls.notes:  # the report prints each distinct ``note`` above its tables
            d["note"] = f"{d['display_name']}: {'; '.join(self_or_cls.notes)}"
        if not isinstance(self_or_cls, type):
            d["config"] = self_or_cls.config()
        return d

    def config(self) -> dict[str, Any]:
        """Settings that change the metric's value (recorded next to results); subclasses extend it."""
        return {}
