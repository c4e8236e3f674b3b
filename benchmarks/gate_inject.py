"""A slowdown injected into the Live2Diff UNet itself, for validating the latency gate (benchmarks/gate_power.py).

``SlowedLive2Diff`` is Live2Diff with ``unet_slowdown``: every UNet forward also re-runs the UNet's first
down-block ResNet on the activations it just processed, a fixed number of times — real UNet work (convolutions,
GroupNorm, SiLU at the model's own sizes), inside the UNet call, not a sleep and not work in the driver. The number
of repetitions is fixed once per process, during the untimed warm-up (:meth:`SlowedLive2Diff._calibrate`), so that the
median steady-state push time grows by ``unet_slowdown - 1``: a deterministic amount of work, as a code change would
add (benchmarks/gate_power.py reports each slowed run's frame time over the unchanged runs', the slowdown the gate
actually had to catch). ``unet_slowdown=1`` is plain Live2Diff.

Selected from the command line (``PYTHONPATH`` = the checkout): ``method.live2diff._target_=benchmarks.gate_inject.
SlowedLive2Diff +method.live2diff.unet_slowdown=1.2``.
"""

from __future__ import annotations

import statistics
import time

import torch

from eval.gate.calibration import UNetCalibration
from live2diff.method import Live2DiffMethod

SETTLE_PUSHES = 24  # steady-state pushes left alone first: a fresh process's pushes get faster for ~40 frames
CALIBRATION_PUSHES = 8  # steady-state pushes per phase (two phases, then the repetitions are fixed)
VERSION = (
    "settled-two-phase-in-context"  # how the repetitions are sized (recorded with each gate_power batch)
)


class SlowedLive2Diff(Live2DiffMethod):
    def __init__(self, unet_slowdown: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if unet_slowdown < 1:
            raise ValueError(f"unet_slowdown must be >= 1, got {unet_slowdown}")
        self.unet_slowdown = float(unet_slowdown)
        unet = self.components.unet
        self._block = unet.down_blocks[0].resnets[0]
        self._seen: tuple | None = None
        self.repeats: int | None = None if self.unet_slowdown > 1 else 0
        self._push_s: list[float] = []
        self._trial = 0  # repetitions injected while calibrating
        self._block.register_forward_pre_hook(self._capture, with_kwargs=True)
        unet.register_forward_hook(self._inject)
        # the untimed warm-up (eval.timing.warm_up) must cover the calibration pushes too
        self.steady_state_frames = int(self.steady_state_frames) + SETTLE_PUSHES + 2 * CALIBRATION_PUSHES
        self._context = (
            None  # the gate's yardstick for live2diff, run before each calibration push (see _calibrate)
        )

    def _clock(self) -> float:
        return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()

    def _capture(self, _module, args, kwargs) -> None:
        self._seen = (args, kwargs)

    def _repeat(self, n: int) -> None:
        args, kwargs = self._seen
        with torch.inference_mode():
            for _ in range(n):
                out = self._block(*args, **kwargs)
        float(out.flatten()[0])  # consumed

    def _inject(self, *_):
        n = self.repeats if self.repeats is not None else self._trial
        if n and self._seen is not None:
            self._repeat(n)

    def push(self, index, frame):
        calibrating = self.repeats is None and len(self._push_s) >= SETTLE_PUSHES
        if calibrating:  # untimed warm-up only: the repetitions are fixed before anything is timed
            self._context = self._context or UNetCalibration(self.device)
            self._context(), self._context()
        t0 = self._clock()
        out = super().push(index, frame)
        dt = self._clock() - t0
        if (
            self.repeats is None
            and self.stream.warmed_up
            and len(self.stream.in_flight) >= self.stream.n_steps - 1
        ):
            self._calibrate(dt)
        return out

    def _calibrate(self, push_s: float) -> None:
        """After ``SETTLE_PUSHES`` steady-state pushes, two phases of ``CALIBRATION_PUSHES``, each push preceded by
        the block the gate times before it (two calls of its ``unet`` yardstick: the same cache state): plain (the
        base time, and a first guess from the block timed on its own), then with the guess injected (the block
        inside the UNet call runs slower than on its own), which scales the guess to the target."""
        self._push_s.append(push_s)
        n = len(self._push_s) - SETTLE_PUSHES
        if n == CALIBRATION_PUSHES:
            one = []
            for _ in range(15):
                t = self._clock()
                self._repeat(1)
                one.append(self._clock() - t)
            self._base_s = statistics.median(self._push_s[SETTLE_PUSHES:])
            self._guess = max(1, round((self.unet_slowdown - 1) * self._base_s / statistics.median(one)))
            self._trial = self._guess  # injected (by _inject) during the second phase
        elif n == 2 * CALIBRATION_PUSHES:
            extra = statistics.median(self._push_s[SETTLE_PUSHES + CALIBRATION_PUSHES :]) - self._base_s
            target = (self.unet_slowdown - 1) * self._base_s
            self.repeats = max(1, round(self._guess * target / extra)) if extra > 0 else self._guess
            self._trial = 0
            self._context = None
