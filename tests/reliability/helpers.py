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


class SlowLogged:
    """Identity that sleeps per frame and appends each real video's prompt to ``log`` when it starts one, to count
    how many times each unit was computed across processes."""

    lookahead = 0

    def __init__(self, log: str, delay: float = 0.05) -> None:
        self.log, self.delay = log, delay

    def prepare(self, prompt, *, height, width, seed):
        if prompt != "warm-up":
            with open(self.log, "a") as f:
                f.write(prompt + "\n")

    def push(self, index, frame):
        import time

        time.sleep(self.delay)
        return [(index, 1 - frame)]

    def flush(self):
        return []

    def reset(self):
        pass
