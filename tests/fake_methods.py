"""Small methods with known behaviour for runner tests (not plug-ins: they live only in the tests)."""

from __future__ import annotations

import torch


class DelayMethod:
    """Emits frame i when frame i + delay is pushed (a stream batch of depth delay + 1); output = 1 - input."""

    def __init__(self, delay: int = 2, clock=None, cost: float = 0.0) -> None:
        self.delay, self.clock, self.cost = delay, clock, cost
        self.pending: list = []

    def prepare(self, prompt, *, height, width, seed):
        self.pending = []

    def push(self, index, frame):
        if self.clock is not None:
            self.clock.advance(self.cost)
        self.pending.append((index, 1.0 - frame))
        if len(self.pending) > self.delay:
            return [self.pending.pop(0)]
        return []

    def flush(self):
        out, self.pending = self.pending, []
        return out

    def reset(self):
        self.pending = []


class NanMethod:
    """Identity, except frame ``bad`` comes out as NaN."""

    def __init__(self, bad: int = 2) -> None:
        self.bad = bad

    def prepare(self, prompt, *, height, width, seed):
        pass

    def push(self, index, frame):
        return [(index, torch.full_like(frame, float("nan")) if index == self.bad else frame)]

    def flush(self):
        return []

    def reset(self):
        pass


class OutOfRangeMethod(NanMethod):
    """Identity, except frame ``bad`` comes out with values above 1."""

    def push(self, index, frame):
        return [(index, frame + 2.0 if index == self.bad else frame)]


class DuplicateMethod(NanMethod):
    """Breaks the contract: emits frame 0 again on every push."""

    def push(self, index, frame):
        return [(index, frame)] + ([(0, frame)] if index > 0 else [])


class InterruptMethod(NanMethod):
    """Simulates Ctrl-C during the stream of the video whose prompt contains ``trigger``."""

    def __init__(self, trigger: str = "sketch") -> None:
        super().__init__(bad=-1)
        self.trigger = trigger
        self.prompt = ""

    def prepare(self, prompt, *, height, width, seed):
        self.prompt = prompt

    def push(self, index, frame):
        if self.trigger in self.prompt:
            raise KeyboardInterrupt
        return [(index, frame)]


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class RepeatEveryOther(NanMethod):
    """A similarity filter stand-in: every odd frame is "skipped" (shows the previous output) and listed in
    ``skipped``, as the filtering methods do."""

    def prepare(self, prompt, *, height, width, seed):
        self.skipped, self.last = [], None

    def push(self, index, frame):
        if index % 2 and self.last is not None:
            self.skipped.append(index)
            return [(index, self.last)]
        self.last = frame
        return [(index, frame)]

    def reset(self):
        self.skipped = []


class CountingMethod(DelayMethod):
    """``DelayMethod`` that counts how many frames it was pushed (class-wide), to tell a re-run from a re-score."""

    pushes = 0

    def push(self, index, frame):
        CountingMethod.pushes += 1
        return super().push(index, frame)
