"""Live mode: replay a video as a live source paced at its frame rate, as a user of a live stream would see it.

Frame *i* "arrives" at ``t0 + i / fps`` in wall-clock time. The method is one worker: while a ``push`` runs, the
source keeps going. What happens to frames that arrive meanwhile is the policy:

* ``drop`` (default): a frame that arrives while the method is busy is lost; when the method is free it waits for
  the next arrival. With a per-frame cost ``c`` above the frame interval ``T`` this processes every
  ``ceil(c / T)``-th frame, so the dropped ratio is ``1 - 1 / ceil(c / T)`` and the lag stays ``c``.
* ``latest``: as ``drop``, but a free method takes the most recent frame that already arrived (a camera buffer of
  one) instead of waiting for the next — more output frames, each a little older.
* ``queue``: nothing is lost; frames wait their turn, so with ``c > T`` the lag grows without bound.

Per frame we record the arrival, the push start/duration and the emission; **lag** is arrival → emission (it
includes queueing and the pipeline delay of a stream batch). Dropped frames are never pushed; the method sees the
frames it gets under consecutive indices ``0, 1, 2, …`` (as a live method would), mapped back to source indices.
The outputs handed to the quality metrics are the frames a viewer sees: a dropped frame's slot shows the last
output, so drops show up in warp error and consistency too.

This module is only the pacing policy (:class:`LivePacing`): the frames go through the one stream driver,
:func:`eval.timing.run_stream`, which times them, checks the contract and (:func:`eval.timing.summarise`) computes
the live figures. ``clock`` and ``sleep`` are injectable; the unit tests drive this with a fake clock and a method
of known cost.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable

import numpy as np
from torch import Tensor

from eval.interface import StreamMethod
from eval.timing import StreamRecord, run_stream

POLICIES = ("drop", "latest", "queue")

# Module-level so tests can swap in a fake clock for a whole run (e.g. one driven through the Runner).
_clock: Callable[[], float] = time.perf_counter
_sleep: Callable[[float], None] = time.sleep


class LivePacing:
    """A :class:`eval.timing.Pacing`: frame *i* arrives at ``t0 + i / rate``; ``policy`` picks the next frame."""

    def __init__(
        self,
        video_fps: float,
        *,
        fps: float | None = None,
        policy: str = "drop",
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.clock = clock or _clock
        self.sleep = sleep or _sleep
        self.rate = float(fps) if fps else float(video_fps)
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(
                f"live mode needs a positive frame rate; got video fps {video_fps!r} and "
                f"runner.live.fps {fps!r} (set runner.live.fps)"
            )
        if policy not in POLICIES:
            close = difflib.get_close_matches(str(policy), POLICIES, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(
                f"runner.live.policy must be one of {', '.join(POLICIES)}, got {policy!r}.{hint}"
            )
        self.policy = policy
        self.arrival = np.zeros(0)
        self.taken = 0

    def start(self, n: int, t0: float) -> np.ndarray:
        self.arrival = t0 + np.arange(n) / self.rate
        self.taken = 0
        return self.arrival

    def wait(self, i: int) -> None:
        now = self.clock()
        if now < self.arrival[i]:
            self.sleep(float(self.arrival[i] - now))  # idle until the frame arrives
        self.taken += 1

    def next(self, current: int, free_at: float) -> int:
        """Source index the method takes next, once it is free at ``free_at`` after processing ``current``."""
        if self.policy == "queue":
            return current + 1
        if (
            self.policy == "drop"
        ):  # frames that arrived while busy are gone; wait for the first one after free_at
            return max(current + 1, int(np.searchsorted(self.arrival, free_at, side="left")))
        # latest: the newest frame that has already arrived, else the next one to arrive
        return max(current + 1, int(np.searchsorted(self.arrival, free_at, side="right")) - 1)

    def describe(self) -> dict:
        n = len(self.arrival)
        return {"live": {"fps": self.rate, "policy": self.policy, "frames": n, "processed": self.taken}}


def run_live_stream(
    method: StreamMethod,
    frames: Tensor,
    video_fps: float,
    *,
    fps: float | None = None,
    policy: str = "drop",
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> StreamRecord:
    """``frames`` replayed as a live source at ``fps`` (default: the video's) through the one stream driver."""
    pacing = LivePacing(video_fps, fps=fps, policy=policy, clock=clock, sleep=sleep)
    return run_stream(method, frames, clock=pacing.clock, pacing=pacing)
