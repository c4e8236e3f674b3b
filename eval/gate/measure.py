"""Measuring: a method's per-frame time as a ratio to a calibration workload timed in the same process.

Each stream goes through the one stream driver (:func:`eval.timing.run_stream`) with the calibration block as its
``before_push`` hook, so the gate times exactly what the evaluation times and rejects a contract violation alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from eval.gate.calibration import MatmulCalibration
from eval.interface import StreamMethod
from eval.timing import run_stream

ESTIMATORS = ("paired", "separate")


Calibration = MatmulCalibration  # the default yardstick (``gate.calibration: matmul``)


def resolve_clock(name: str, device: str, threads: int) -> str:
    """``auto``: the thread's CPU time when all work runs on this one CPU thread (immune to preemption by other
    processes, the main noise on a shared machine), wall-clock time otherwise (GPU, several threads)."""
    if name == "auto":
        return "thread" if device == "cpu" and threads == 1 else "wall"
    if name not in CLOCKS:
        raise ValueError(f"gate.clock must be auto, {' or '.join(CLOCKS)}; got {name!r}")
    if name == "thread" and (device != "cpu" or threads != 1):
        raise ValueError(
            "gate.clock=thread measures one CPU thread: it needs hardware.device=cpu and "
            "hardware.threads=1 (or use gate.clock=wall)"
        )
    return name


CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    # CPU time of the calling thread: ignores time spent descheduled by other processes. Only meaningful on the
    # CPU with torch.set_num_threads(1) (all work then runs on this thread); never for GPU methods.
    "thread": time.thread_time,
}


@dataclass
class MethodTiming:
    """One method's figures over k repetitions (times in ms)."""

    ratios: list[float]
    frame_ms: list[float]
    calib_ms: list[float]
    calls: int = (
        0  # calibration calls per frame (gate.calibration_calls, or the matched count when that is 0)
    )
    pass_ratios: list[float] = field(
        default_factory=list
    )  # a reference's: the ratio of each pass (median kept)
    calibration: str = ""  # the yardstick's name (eval.gate.calibration.CALIBRATIONS), when the gate knows it

    @property
    def ratio(self) -> float:
        return float(np.median(self.ratios))

    @property
    def frame_ms_median(self) -> float:
        return float(np.median(self.frame_ms))

    @property
    def calib_ms_median(self) -> float:
        return float(np.median(self.calib_ms))

    @property
    def spread(self) -> float:
        """Relative half-range of the repetition ratios: how noisy this measurement was."""
        r = np.asarray(self.ratios)
        return float((r.max() - r.min()) / 2 / np.median(r)) if r.size and np.median(r) > 0 else math.nan


def measure(
    methods: dict[str, StreamMethod],
    streams: list[tuple[str, torch.Tensor]],
    *,
    repeats: int = 5,
    warmup_frames: int = 4,
    calibration_calls: int | Mapping[str, int] = 1,
    statistic: str = "call",
    quantile: float = 0.5,
    estimator: str = "paired",
    calibrate: Callable[[], Any] | Mapping[str, Callable[[], Any]] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    seed: int = 42,
) -> dict[str, MethodTiming]:
    """Time every method over every ``(prompt, frames)`` stream, ``repeats`` times, interleaved with calibration.

    ``calibrate`` and ``calibration_calls`` are one value for every method or a mapping by method name (each
    method's own yardstick and block size: :mod:`eval.gate.calibration`).

    Interleaving is per frame: before each ``push`` a block of ``calibration_calls`` calibration calls runs, timed
    on its own (and divided by the count), so a burst of load from a neighbour hits the method and its yardstick
    alike. ``calibration_calls=0`` matches the block's duration to the method's per-frame time (measured on one
    untimed stream first): a preemption or a cache flush then lands on either with the same odds, whereas a
    short yardstick beside a long frame escapes the disturbances the frame collects. A repetition's ratio is, with
    ``estimator="paired"`` (the default), the ``quantile`` of the per-frame ratios (each frame's time over the
    calibration block timed just before it: a slow drift of the machine's speed cancels frame by frame), or with
    ``"separate"`` the ``quantile`` of the method's kept per-frame times over the same quantile of the calibration
    times (0.1 reads the undisturbed speed and ignores a preempted tail, but the two quantiles come from different
    moments); the method order rotates between repetitions. ``statistic`` is ``call`` (each push's duration:
    the per-frame compute cost) or ``latency`` (push start → emission, which adds a stream batch's pipeline delay).
    """
    names = list(methods)
    per_calls = {
        n: int(calibration_calls[n] if isinstance(calibration_calls, Mapping) else calibration_calls)
        for n in names
    }
    if repeats < 1 or min(per_calls.values(), default=0) < 0:
        raise ValueError(
            "gate.repeats must be >= 1 and gate.calibration_calls >= 0 (0: matched to the method)"
        )
    if not 0 <= quantile <= 1:
        raise ValueError(f"gate.quantile must be in [0, 1], got {quantile}")
    if statistic not in ("call", "latency"):
        raise ValueError(f"gate.statistic must be 'call' or 'latency', got {statistic!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"gate.estimator must be {' or '.join(ESTIMATORS)}, got {estimator!r}")
    if isinstance(calibrate, Mapping):
        yardstick = {n: calibrate[n] for n in names}
    else:
        one = calibrate or Calibration()
        yardstick = {n: one for n in names}
    out = {name: MethodTiming([], [], []) for name in names}
    calls = dict(per_calls)
    for name in [n for n in names if per_calls[n] == 0]:
        prompt, frames = streams[0]
        times, calib = _stream_interleaved(
            methods[name], prompt, frames, yardstick[name], 1, "call", clock, seed
        )
        kept_t, kept_c = times[warmup_frames:] or times, calib[warmup_frames:] or calib
        calls[name] = max(1, min(1000, round(float(np.median(kept_t)) / max(float(np.median(kept_c)), 1e-9))))
    for name in names:
        out[name].calls = calls[name]
    for rep in range(repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            method = methods[name]
            kept_method: list[float] = []
            kept_calib: list[float] = []
            for prompt, frames in streams:
                times, calib = _stream_interleaved(
                    method, prompt, frames, yardstick[name], calls[name], statistic, clock, seed
                )
                kept_method += times[warmup_frames:]
                kept_calib += calib[warmup_frames:]
            if not kept_method:
                raise ValueError(
                    f"gate.warmup_frames={warmup_frames} leaves no timed frame: the streams have "
                    f"{min(f.shape[0] for _, f in streams)} frames"
                )
            frame, cal = float(np.quantile(kept_method, quantile)), float(np.quantile(kept_calib, quantile))
            if estimator == "paired":
                per_frame = np.asarray(kept_method) / np.maximum(np.asarray(kept_calib), 1e-12)
                out[name].ratios.append(float(np.quantile(per_frame, quantile)))
            else:
                out[name].ratios.append(frame / cal)
            out[name].frame_ms.append(frame * 1e3)
            out[name].calib_ms.append(cal * 1e3)
    return out


def _stream_interleaved(
    method: StreamMethod,
    prompt: str,
    frames: torch.Tensor,
    calibrate: Callable[[], Any],
    calls: int,
    statistic: str,
    clock: Callable[[], float],
    seed: int,
) -> tuple[list[float], list[float]]:
    """One stream through ``method`` (the one stream driver, :func:`eval.timing.run_stream`) with a block of
    ``calls`` calibration calls before every push as its ``before_push`` hook; per-frame method times and per-call
    calibration times (block time / calls), in seconds."""
    calib: list[float] = []

    def calibration_block(i: int) -> None:
        start = clock()
        for _ in range(calls):
            calibrate()
        calib.append((clock() - start) / calls)

    method.prepare(prompt, height=int(frames.shape[-2]), width=int(frames.shape[-1]), seed=seed)
    try:
        rec = run_stream(method, frames, clock=clock, before_push=calibration_block)
    finally:
        method.reset()
    times = rec.call_s if statistic == "call" else rec.latency_s
    return times.tolist(), calib
