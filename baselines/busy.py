"""A method that does a fixed, deterministic amount of CPU work per frame: the test subject of the latency gate.

Its cost is ``round(iterations * slowdown)`` matrix products of ``size x size`` per pushed frame, so ``slowdown: 1.2``
is exactly 20 % more arithmetic — an injected regression made by config, not by a code edit (what
``benchmarks/gate_power.py`` uses). It returns each input frame unchanged, optionally ``delay`` frames later (a
stand-in for a stream batch's pipeline depth), so it meets the StreamMethod contract: every pushed index is emitted
exactly once, outputs depend on no future frame, and repeated runs give identical outputs.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor

from eval.interface import Emission


class BusyMethod:
    lookahead = 0

    def __init__(
        self,
        iterations: int = 60,
        size: int = 256,
        slowdown: float = 1.0,
        delay: int = 0,
        device: str = "cpu",
    ) -> None:
        if iterations < 0 or size < 1 or slowdown < 0 or delay < 0:
            raise ValueError("busy: iterations, slowdown and delay must be >= 0 and size >= 1")
        self.iterations = int(round(iterations * slowdown))
        self.size = int(size)
        self.delay = int(delay)
        self.device = device
        g = torch.Generator().manual_seed(0)
        # Scaled so repeated products stay finite: the values never matter, only the arithmetic.
        self._a = (torch.randn(size, size, generator=g) / size**0.5).to(device)
        self._b = (torch.randn(size, size, generator=g) / size**0.5).to(device)
        self._pending: deque[Emission] = deque()
        self.checksum = 0.0

    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        self._pending.clear()

    def _work(self) -> None:
        x = self._a
        for _ in range(self.iterations):
            x = torch.mm(x, self._b)
        self.checksum = float(x[0, 0])  # consumes the result, so the work is really done (and synchronised)

    def push(self, index: int, frame: Tensor) -> list[Emission]:
        self._work()
        self._pending.append((index, frame))
        if len(self._pending) > self.delay:
            return [self._pending.popleft()]
        return []

    def flush(self) -> list[Emission]:
        out = list(self._pending)
        self._pending.clear()
        return out

    def reset(self) -> None:
        self._pending.clear()
