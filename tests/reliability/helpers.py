"""Small plug-ins for the reliability tests."""

from __future__ import annotations

from eval.metrics.frame_diff import MeanAbsFrameDiff


class WeightedFrameDiff(MeanAbsFrameDiff):
    """frame_diff that names a weights file (its content must be in the unit key)."""

    def __init__(self, weights: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.weights = weights


class WeightedIdentity:
    """Returns its input; names a weights file (its content must be in the unit key)."""

    lookahead = 0

    def __init__(self, weights: str | None = None) -> None:
        self.weights = weights

    def prepare(self, prompt, *, height, width, seed):
        pass

    def push(self, index, frame):
        return [(index, frame)]

    def flush(self):
        return []

    def reset(self):
        pass
