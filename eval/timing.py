"""Driving a method over one stream and turning the timestamps into system figures.

The runner calls :func:`run_stream`; it times each ``push`` (and the final ``flush``) with the method's device
synchronised, so asynchronous GPU work is inside the measured interval. For frame *i* the **end-to-end latency** is
the time from the start of its ``push`` to the end of the call that emitted it — it includes the pipeline delay of
a stream batch, which per-call times hide. Quality metrics are never computed here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch
from torch import Tensor

from eval.interface import StreamMethod, method_device


class MethodContractError(RuntimeError):
    """A method broke the StreamMethod contract (wrong index, duplicate, missing frame, bad shape)."""


@dataclass
class StreamRecord:
    outputs: list[Tensor | None]
    push_start: np.ndarray  # [T] seconds, clock of the run
    call_s: np.ndarray  # [T] duration of push(i)
    emit_time: np.ndarray  # [T] when output i was returned (NaN if never)
    flush_s: float
    peak_mem_mb: float
    extra: dict = field(default_factory=dict)

    @property
    def latency_s(self) -> np.ndarray:
        return self.emit_time - self.push_start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class MemoryProbe:
    """Peak memory during a stream: CUDA max-allocated on GPU, sampled process RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.process = psutil.Process()
        self.peak = 0.0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def sample(self) -> None:
        if self.device.type != "cuda":
            self.peak = max(self.peak, self.process.memory_info().rss / 2**20)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return self.peak


def _accept(record: StreamRecord, emitted: list, when: float, shape: tuple) -> None:
    if not isinstance(emitted, list):
        raise MethodContractError(
            f"push/flush must return a list of (index, frame), got {type(emitted).__name__}"
        )
    n = len(record.outputs)
    for item in emitted:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise MethodContractError(f"emissions must be (index, frame) tuples, got {item!r:.80}")
        j, out = item
        if not 0 <= int(j) < n:
            raise MethodContractError(f"emitted index {j} was never pushed (stream has {n} frames)")
        if record.outputs[j] is not None:
            raise MethodContractError(f"frame {j} emitted twice")
        if not isinstance(out, Tensor) or tuple(out.shape) != shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise MethodContractError(f"output frame {j} is {got}, expected a tensor of shape {shape}")
        record.emit_time[j] = when
        record.outputs[j] = out


def run_stream(
    method: StreamMethod, frames: Tensor, *, clock: Callable[[], float] = time.perf_counter
) -> StreamRecord:
    """Push every frame, then flush; returns outputs (on the CPU, float32) and timestamps."""
    n = frames.shape[0]
    device = method_device(method)
    shape = tuple(frames.shape[1:])
    rec = StreamRecord([None] * n, np.zeros(n), np.zeros(n), np.full(n, np.nan), 0.0, 0.0)
    probe = MemoryProbe(device)
    for i in range(n):
        frame = frames[i]
        start = clock()
        emitted = method.push(i, frame)
        synchronize(device)
        end = clock()
        rec.push_start[i], rec.call_s[i] = start, end - start
        _accept(rec, emitted, end, shape)
        probe.sample()
    start = clock()
    emitted = method.flush()
    synchronize(device)
    end = clock()
    rec.flush_s = end - start
    _accept(rec, emitted, end, shape)
    missing = [i for i, o in enumerate(rec.outputs) if o is None]
    if missing:
        raise MethodContractError(f"{len(missing)} frames were never emitted (first: {missing[:5]})")
    rec.outputs = [o.detach().to("cpu", torch.float32) for o in rec.outputs]
    rec.peak_mem_mb = probe.peak_mb()
    return rec


# The figures below are described (name, unit, direction) once, in eval/results.py (SYSTEM_METRICS).


def summarise(rec: StreamRecord) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-frame and per-video system figures of one stream."""
    lat_ms = rec.latency_s * 1e3
    per_frame = {"latency_ms": lat_ms, "call_ms": rec.call_s * 1e3}
    total = float(np.nanmax(rec.emit_time) - rec.push_start[0]) if len(lat_ms) else float("nan")
    per_video = {
        "latency_p50_ms": float(np.nanpercentile(lat_ms, 50)),
        "latency_p95_ms": float(np.nanpercentile(lat_ms, 95)),
        "latency_p99_ms": float(np.nanpercentile(lat_ms, 99)),
        "first_frame_latency_ms": float(lat_ms[0]),
        "call_p50_ms": float(np.median(rec.call_s) * 1e3),
        "fps": len(lat_ms) / total if total > 0 else float("nan"),
        # 1 / median per-call time: what per-call FPS figures (e.g. the reference README's) measure
        "steady_fps": 1.0 / float(np.median(rec.call_s)) if np.median(rec.call_s) > 0 else float("nan"),
        "peak_mem_mb": rec.peak_mem_mb,
    }
    return per_frame, per_video
