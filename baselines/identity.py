"""The harness floor: returns each input frame unchanged, at once.

Its latency is what the harness itself costs; its quality rows are the *input* video's own figures (e.g. how smooth
the source is under warp error), which every other method is read against.
"""

from __future__ import annotations

from torch import Tensor

from eval.interface import Emission


class IdentityMethod:
    lookahead = 0
    device = "cpu"

    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        pass

    def push(self, index: int, frame: Tensor) -> list[Emission]:
        return [(index, frame)]

    def flush(self) -> list[Emission]:
        return []

    def reset(self) -> None:
        pass
