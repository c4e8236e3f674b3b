"""StreamDiffusion's stochastic similarity filter and the one skip policy of every ``*_ssf`` method
(``streamdiffusion_ssf``, ``live2diff_ssf``), as the reference pipelines behave (StreamDiffusion
``src/streamdiffusion/image_filter.py`` + ``pipeline.py``; Live2Diff ships the same filter and pipeline code):

* **Skip probability**: a frame whose cosine similarity to the last *processed* input frame (both in [-1, 1], as the
  reference compares preprocessed images) is high is skipped with probability ``1 - (1 - cos) / (1 - threshold)``,
  clipped to [0, 1]; ``threshold >= 1`` never skips.
* **Skip ⇒ the last output**: a skipped frame is answered at once with the last output the method emitted (the
  reference returns ``prev_image_result``, the previous call's output; with a stream batch that is the output of an
  older frame). The model, its stream batch and caches never see a skipped frame.
* **max_skip counting** (the reference's, kept as is): ``skip_count`` grows with every skip and is *not* reset when a
  dissimilar frame is processed; a frame that would be skipped while ``skip_count > max_skip_frame`` is processed
  instead and resets the count. So at most ``max_skip_frame + 1`` skips in a row, and fewer when earlier skips since
  the last forced processing count against the budget.
* **First frame**: the filter's first frame is never skipped (the reference's ``prev_tensor is None``). The filter
  starts once the method has emitted an output to repeat: a stream batch here emits nothing during its first
  ``lag`` pushes (the reference emits its zero-initialised buffer), and Live2Diff's warm-up frames are denoised in the
  reference's ``prepare`` before the filter runs — so those frames are processed, not compared.
* **Seeded draw**: the reference draws ``random.uniform(0, 1)`` per frame; here each draw is a pure function of
  (seed, frame index), so skip patterns repeat under the seed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def seeded_uniform(*keys: int) -> float:
    """A U[0, 1) sample that depends only on ``keys`` (no global RNG state)."""
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return float(torch.rand((), generator=torch.Generator().manual_seed(seed)))


class SimilarImageFilter:
    """StreamDiffusion's filter (same decisions, same counting) with the uniform draw passed in."""

    SALT = 104729  # mixed into the per-frame draw so it is independent of the methods' other seeded draws

    def __init__(self, threshold: float = 0.98, max_skip_frame: int = 10) -> None:
        if not 0 < float(threshold) <= 1 or int(max_skip_frame) < 0:
            raise ValueError(
                "similar_image_filter_threshold must be in (0, 1] and similar_image_filter_max_skip_frame >= 0"
            )
        self.threshold = float(threshold)
        self.max_skip_frame = int(max_skip_frame)
        self.reset()

    def reset(self) -> None:
        self.prev: Tensor | None = None
        self.skip_count = 0
        self.n_skipped = 0

    def skip_probability(self, x: Tensor) -> float:
        if self.prev is None or self.threshold >= 1:
            return 0.0
        cos = torch.nn.functional.cosine_similarity(
            self.prev.reshape(-1), x.reshape(-1), dim=0, eps=1e-6
        ).item()
        return max(0.0, 1.0 - (1.0 - cos) / (1.0 - self.threshold))

    def should_skip(self, x: Tensor, sample: float) -> bool:
        """The reference's ``__call__`` (None there = True here). ``x`` in [-1, 1]; ``sample`` ~ U[0, 1)."""
        if self.prev is not None and self.skip_probability(x) >= sample:
            if self.skip_count <= self.max_skip_frame:
                self.skip_count += 1
                self.n_skipped += 1
                return True
            self.skip_count = 0  # over the budget: processed, and only then the count starts again
        self.prev = x.detach().clone()
        return False

    def skip_frame(self, x: Tensor, seed: int, index: int) -> bool:
        """``should_skip`` with the seeded draw for frame ``index``; ``x`` in [0, 1] (the runner's frames)."""
        return self.should_skip(x * 2 - 1, seeded_uniform(seed, self.SALT, index))


class SimilarFrameSkipper:
    """The skip policy shared by every ``*_ssf`` method: ``check`` before any work on a frame, ``emitted`` with what
    the method emitted. ``skipped`` lists the skipped indices of the current stream (the runner's
    ``skipped_ratio``)."""

    def __init__(self, threshold: float = 0.98, max_skip_frame: int = 10) -> None:
        self.filter = SimilarImageFilter(threshold, max_skip_frame)
        self.reset()

    def reset(self) -> None:
        self.filter.reset()
        self.last_output: Tensor | None = None
        self.skipped: list[int] = []

    def check(self, index: int, frame: Tensor, seed: int) -> Tensor | None:
        """The output to emit now for a skipped frame, or None when the method is to process the frame."""
        if (
            self.last_output is None
        ):  # nothing to repeat yet: the frame is processed and the filter not started
            return None
        if not self.filter.skip_frame(frame, seed, index):
            return None
        self.skipped.append(index)
        return self.last_output.clone()

    def emitted(self, out: list[tuple[int, Tensor]]) -> None:
        if out:
            self.last_output = out[-1][1]
