"""The one contract every streaming method meets.

A method sees a live stream: frames arrive one at a time and it may keep some of them in flight (a stream batch
delays each output by its pipeline depth), so emission is explicit — ``push`` and ``flush`` return the frames they
completed, each tagged with the index it was pushed under. The runner owns all timing; methods never time
themselves.

Frames are ``torch.float32`` tensors of shape ``[3, H, W]`` with values in ``[0, 1]`` (RGB), on the CPU when they
enter ``push``; a method moves them to its own device and returns outputs of the same shape, on any device (the
driver copies them to the CPU inside the timed call, the same for every method, so a method need not do it).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

Frame = Tensor
"""``float32 [3, H, W]`` in ``[0, 1]``."""

Emission = tuple[int, Tensor]
"""``(index of the pushed frame, output frame)``."""


@runtime_checkable
class StreamMethod(Protocol):
    """Streaming video-to-video method.

    Optional attributes a method may declare (read with ``getattr`` and these defaults):

    * ``lookahead: int = 0`` — how many *future* frames an output may depend on. Causal methods have 0; an offline
      sliding-window method declares its window. The contract test checks exactly this.
    * ``initial_block: int = 0`` — the first ``initial_block`` frames are processed *together* (Live2Diff's
      bidirectional warmup), so their outputs may depend on each other; after the block the ``lookahead`` rule holds.
    * ``device: torch.device | str = "cpu"`` — where it computes; the runner synchronises it around each push.
    * ``skipped: list[int] | None`` — a method with a similarity filter lists the indices it answered with an
      earlier output instead of running its model (cleared by ``prepare``); the results gain ``skipped_ratio``.
    * ``steady_state_frames: int = 1`` — how many pushes bring a fresh stream to its steady-state path (a full
      stream batch: ``len(t_index_list)``; a full window; Live2Diff: its warm-up block plus a full stream batch).
      The runner's untimed warm-up pushes at least this many frames through a newly built method (then ``reset``),
      so no timed figure pays for first-time allocations of the steady-state shapes; first-frame latency is still
      measured on a fresh state per video.

    So output ``i`` may depend on input frames ``0 .. max(i + lookahead, initial_block - 1)`` and no others.
    """

    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        """Per-video, untimed set-up (text encoding, allocation, RNG seeding)."""

    def push(self, index: int, frame: Frame) -> list[Emission]:
        """Feed frame ``index``; return the outputs this call completed (possibly none)."""

    def flush(self) -> list[Emission]:
        """End of stream: return every output still in flight."""

    def reset(self) -> None:
        """Free per-video state (caches, queues); the method stays loaded for the next video."""


def method_lookahead(method: object) -> int:
    return int(getattr(method, "lookahead", 0))


def method_initial_block(method: object) -> int:
    return int(getattr(method, "initial_block", 0))


def method_device(method: object) -> torch.device:
    return torch.device(getattr(method, "device", "cpu"))


def method_steady_state_frames(method: object) -> int:
    return max(1, int(getattr(method, "steady_state_frames", 1)))
