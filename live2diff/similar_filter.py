"""StreamDiffusion's stochastic similarity filter, shared by ``streamdiffusion`` and ``live2diff``.

A frame whose cosine similarity to the last *processed* input frame is high is skipped with a probability that
grows with the similarity (``1 - (1 - cos) / (1 - threshold)``, clipped to [0, 1]), at most ``max_skip_frame`` times
in a row; the method then shows its last output again instead of running the model. The reference draws the
probability with ``random.uniform``; here each frame's draw is a pure function of (seed, index), so runs repeat.
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
    """StreamDiffusion's filter with a seeded draw per frame instead of ``random.uniform``."""

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

    def observe(self, x: Tensor) -> None:
        """``x`` is processed (not skipped): it becomes the frame the next ones are compared with."""
        self.skip_count = 0
        self.prev = x.detach().clone()

    def should_skip(self, x: Tensor, sample: float) -> bool:
        """``x``: the frame in [-1, 1] (as the reference compares preprocessed images); ``sample`` ~ U[0, 1)."""
        if (
            self.prev is not None
            and self.skip_probability(x) >= sample
            and self.skip_count < self.max_skip_frame
        ):
            self.skip_count += 1
            self.n_skipped += 1
            return True
        self.observe(x)
        return False

    def skip_frame(self, x: Tensor, seed: int, index: int) -> bool:
        """``should_skip`` with the seeded draw for frame ``index``; ``x`` in [0, 1] (the runner's frames)."""
        return self.should_skip(x * 2 - 1, seeded_uniform(seed, self.SALT, index))
