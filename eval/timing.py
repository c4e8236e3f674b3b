"""The one stream driver: push frames through a method, time each call, collect its emissions, summarise.

Every mode goes through :func:`run_stream` — the offline evaluation, live mode (a :class:`Pacing` hook from
``eval/live.py`` decides which frame goes next and when) and the latency gate (a ``before_push`` hook runs its
calibration block, untimed). So the timed region, the contract checks and the figures are defined here only:

* **Timed call** (``call_s``): from the start of ``push`` (or the final ``flush``) to the point where the method's
  device is synchronised and every frame it emitted has been copied to the CPU as ``float32`` by the driver. The
  copy is inside the call for every method, so a method that keeps outputs on the GPU pays the same transfer as
  one that copies them itself.
* **End-to-end latency** of frame *i* (``latency_s``): from the start of its ``push`` to the end of the call that
  emitted it — it includes the pipeline delay of a stream batch, which per-call times hide.
* **Lag** (paced streams only, ``lag_s``): from the frame's arrival at the source clock to its emission; it adds
  the time a frame waited for a busy method.
* **Peak memory** per stream: CUDA's max-allocated with the peak statistics reset at the start of the unit; on the
  CPU the growth of the process's resident high-water mark (Linux ``VmHWM``, reset at the start of the unit) over
  its RSS then (not the absolute RSS, which depends on what ran before in the same process).

Quality metrics are never computed here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import psutil
import torch
from torch import Tensor

from eval.interface import StreamMethod, method_device, method_steady_state_frames


class MethodContractError(RuntimeError):
    """A method broke the StreamMethod contract (wrong index, duplicate, missing frame, bad shape)."""


@dataclass
class StreamRecord:
    """What one stream produced, indexed by *source* frame (a frame live mode dropped has NaN times)."""

    outputs: list[Tensor | None]  # on the CPU, float32; in live mode a dropped slot shows the last output
    push_start: np.ndarray  # [T] seconds, clock of the run
    call_s: np.ndarray  # [T] duration of the timed call push(i)
    emit_time: np.ndarray  # [T] end of the call that emitted output i (NaN if never)
    flush_s: float
    peak_mem_mb: float
    extra: dict = field(default_factory=dict)
    arrival: np.ndarray | None = None  # [T] arrival at the source clock (paced streams only)
    by_push: np.ndarray | None = None  # [T] emitted by a push rather than the final flush
    steady_from: int = 0  # pushes before this one (the method's steady_state_frames) are not steady state

    @property
    def latency_s(self) -> np.ndarray:
        """End-to-end latency: push start of frame i -> end of the call that emitted it."""
        return self.emit_time - self.push_start

    @property
    def lag_s(self) -> np.ndarray:
        """Arrival at the source -> emission (paced streams; offline a frame "arrives" when its push starts)."""
        start = self.arrival if self.arrival is not None else self.push_start
        return self.emit_time - start

    @property
    def paced(self) -> bool:
        return self.arrival is not None

    def emitting_calls(self) -> list[int]:
        """Per output frame, the push call that emitted it (``len(outputs)`` for the final flush): what a script
        that stores call i's output at index i writes (the warp error's ``lag="auto"``). Offline streams only."""
        n = len(self.outputs)
        if self.by_push is None or not np.isfinite(self.push_start).all():
            raise ValueError(
                "the emission schedule needs an offline stream recorded with by_push (runner.mode=offline; a unit "
                "cached before by_push was recorded: runner.resume=false)"
            )
        # the call whose start is the last one before the emission (a call ends after it starts, the next one
        # starts no earlier than that end)
        calls = np.searchsorted(self.push_start, self.emit_time, side="left") - 1
        return [int(c) if self.by_push[j] else n for j, c in enumerate(calls)]

    def timings(self) -> dict[str, Any]:
        """Everything but the outputs, as JSON-able data (the unit store keeps it beside the outputs)."""
        out = {
            "push_start": self.push_start.tolist(),
            "call_s": self.call_s.tolist(),
            "emit_time": self.emit_time.tolist(),
            "flush_s": self.flush_s,
            "peak_mem_mb": self.peak_mem_mb,
            "extra": self.extra,
        }
        if self.arrival is not None:
            out["arrival"] = self.arrival.tolist()
        if self.by_push is not None:
            out["by_push"] = self.by_push.tolist()
        out["steady_from"] = self.steady_from
        return out

    @classmethod
    def from_timings(cls, outputs: list[Tensor], d: dict[str, Any]) -> StreamRecord:
        arr = lambda k, dtype=np.float64: np.asarray(d[k], dtype=dtype) if d.get(k) is not None else None  # noqa: E731
        return cls(
            list(outputs),
            arr("push_start"),
            arr("call_s"),
            arr("emit_time"),
            float(d["flush_s"]),
            float(d["peak_mem_mb"]),
            d.get("extra", {}),
            arr("arrival"),
            arr("by_push", bool),
            int(d.get("steady_from", 0)),
        )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class MemoryProbe:
    """Peak memory of one unit. GPU: CUDA max-allocated, peak statistics reset when the probe is made. CPU: the
    growth of the process's resident high-water mark over its RSS when the probe is made (so a unit's figure does
    not depend on the methods that ran before it in the same process). On Linux the kernel's own high-water mark
    (``VmHWM``, reset through ``/proc/self/clear_refs``) is read, so memory a call allocates and frees before it
    returns counts; elsewhere the RSS sampled after each call (which misses such transient allocations: it read
    0.004 MiB for a unit that had allocated tens of MiB)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.process = psutil.Process()
        self.hwm = False
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = 0.0
        else:
            self.hwm = _reset_hwm()
            self.start = self._rss()
        self.peak = self.start

    def _rss(self) -> float:
        return self.process.memory_info().rss / 2**20

    def sample(self) -> None:
        if self.device.type != "cuda":
            self.peak = max(self.peak, _hwm_mb() if self.hwm else self._rss())

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        self.sample()
        return max(0.0, self.peak - self.start)


_STATUS = "/proc/self/status"


def _hwm_mb() -> float:
    """The process's resident high-water mark (``VmHWM``, MiB) since the last reset."""
    with open(_STATUS) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmHWM line in /proc/self/status")


def _reset_hwm() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _hwm_mb()
    except OSError:
        return False
    return True


class Pacing(Protocol):
    """When frames reach the method and which ones it gets. Offline (the default) every frame, each as soon as the
    method is free; live mode (``eval.live.LivePacing``) replays them at a frame rate with a drop policy."""

    def start(self, n: int, t0: float) -> np.ndarray | None:
        """Called once before the first push: the arrival time of every frame, or None (offline)."""

    def wait(self, i: int) -> None:
        """Idle until frame ``i`` arrives (untimed)."""

    def next(self, current: int, free_at: float) -> int:
        """The source frame to push after ``current``, the method being free at ``free_at`` (``>= n``: done)."""

    def describe(self) -> dict:
        """Settings and counters kept with the stream's record (``extra``)."""


class Offline:
    """Every frame in order; the source waits for the method."""

    def start(self, n: int, t0: float) -> None:
        return None

    def wait(self, i: int) -> None:
        pass

    def next(self, current: int, free_at: float) -> int:
        return current + 1

    def describe(self) -> dict:
        return {}


def _to_host(emitted: Any) -> Any:
    """The driver's copy of every emitted frame to the CPU (float32), inside the timed call. Malformed emissions
    are passed on unchanged for :meth:`Emissions.accept` to reject."""
    if not isinstance(emitted, list):
        return emitted
    return [
        (item[0], item[1].detach().to("cpu", torch.float32))
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tensor)
        else item
        for item in emitted
    ]


class Emissions:
    """The emission accumulator: checks each ``(index, frame)`` against the contract and files it under its source
    frame. The method sees consecutive indices ``0, 1, …`` for the frames it was given (all of them offline; the
    ones live mode did not drop), mapped back to source indices here."""

    def __init__(self, n: int, shape: tuple[int, ...], outputs: Any = None) -> None:
        self.shape = shape
        # where the frames go: a list, or a disk-backed store (eval.framefile.FrameFile) written as they come
        self.outputs: Any = [None] * n if outputs is None else outputs
        self.have = np.zeros(n, dtype=bool)
        self.emit_time = np.full(n, np.nan)
        self.by_push = np.zeros(n, dtype=bool)
        self.source_of: list[int] = []  # method index -> source index

    def pushed(self, source: int) -> int:
        """Record that source frame ``source`` is pushed; returns the index the method sees."""
        self.source_of.append(source)
        return len(self.source_of) - 1

    def accept(self, emitted: Any, when: float, by_push: bool) -> None:
        if not isinstance(emitted, list):
            raise MethodContractError(
                f"push/flush must return a list of (index, frame), got {type(emitted).__name__}"
            )
        for item in emitted:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise MethodContractError(f"emissions must be (index, frame) tuples, got {item!r:.80}")
            k, out = item
            if not 0 <= int(k) < len(self.source_of):
                raise MethodContractError(
                    f"emitted index {k} was never pushed ({len(self.source_of)} frames pushed so far)"
                )
            j = self.source_of[int(k)]
            if self.have[j]:
                raise MethodContractError(f"frame {k} emitted twice")
            if not isinstance(out, Tensor) or tuple(out.shape) != self.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise MethodContractError(
                    f"output frame {k} is {got}, expected a tensor of shape {self.shape}"
                )
            self.outputs[j] = out
            self.have[j] = True
            self.emit_time[j] = when
            self.by_push[j] = by_push

    def check_complete(self) -> None:
        missing = [k for k, j in enumerate(self.source_of) if not self.have[j]]
        if missing:
            raise MethodContractError(
                f"{len(missing)} pushed frames were never emitted (first: {missing[:5]})"
            )

    def shown(self) -> Any:
        """Per source frame, the output a viewer sees: its own, or (a frame never pushed) the last one before."""
        if not isinstance(self.outputs, list):  # a store: a frame never pushed gets a copy of the last one
            last = None
            for j, have in enumerate(self.have):
                if have:
                    last = j
                elif last is not None:
                    self.outputs[j] = self.outputs[last]
            return self.outputs
        out, last = [], None
        for o in self.outputs:
            last = o if o is not None else last
            out.append(last)
        return out


def run_stream(
    method: StreamMethod,
    frames: Tensor,
    *,
    clock: Callable[[], float] = time.perf_counter,
    pacing: Pacing | None = None,
    before_push: Callable[[int], None] | None = None,
    memory: MemoryProbe | None = None,
    outputs: Any = None,
) -> StreamRecord:
    """Push the frames (all of them, or those ``pacing`` selects), then flush; the method is already prepared.

    ``before_push(i)`` runs before source frame ``i`` is pushed, outside the timed call (the gate times its
    calibration block there). ``memory``: a probe made before ``prepare`` so the unit's set-up counts (default: made
    here). ``frames``: a ``[T, 3, H, W]`` tensor or anything indexable like one (a disk-backed
    :class:`~eval.framefile.FrameFile`: each frame is read before its timed call). ``outputs``: where the emitted
    frames go (default a list; a FrameFile keeps a long stream's outputs out of memory). Returns outputs on the CPU (float32) and the timestamps; raises :class:`MethodContractError` when the
    method breaks the contract.
    """
    pacing = pacing or Offline()
    n = int(frames.shape[0])
    device = method_device(method)
    probe = memory or MemoryProbe(device)
    acc = Emissions(n, tuple(frames.shape[1:]), outputs)
    push_start, call_s = np.full(n, np.nan), np.full(n, np.nan)
    arrival = pacing.start(n, clock())
    i = 0
    while i < n:
        pacing.wait(i)
        if before_push is not None:
            before_push(i)
        k = acc.pushed(i)
        frame = frames[i]  # read (from a disk-backed clip: a file read) before the timed call
        start = clock()
        emitted = _to_host(method.push(k, frame))
        synchronize(device)
        end = clock()
        push_start[i], call_s[i] = start, end - start
        acc.accept(emitted, end, by_push=True)
        probe.sample()
        i = pacing.next(i, end)
    start = clock()
    emitted = _to_host(method.flush())
    synchronize(device)
    end = clock()
    acc.accept(emitted, end, by_push=False)
    probe.sample()
    acc.check_complete()
    extra = pacing.describe()
    return StreamRecord(
        acc.shown(),
        push_start,
        call_s,
        acc.emit_time,
        end - start,
        probe.peak_mb(),
        extra,
        arrival=None if arrival is None else np.asarray(arrival, dtype=np.float64),
        by_push=acc.by_push,
        steady_from=method_steady_state_frames(method),
    )


def warm_up(method: StreamMethod, frames: Tensor, frames_wanted: int, *, prompt: str, seed: int) -> int:
    """Untimed frames through ``method`` until it reaches its steady state, then ``reset``.

    Pushes ``max(frames_wanted, method.steady_state_frames)`` frames (the clip's frames again from the start when it
    is shorter), so one-off costs (allocation, kernel selection, lazy init) *and* the shapes of the steady-state
    path (a full stream batch, a full window, Live2Diff past its warm-up) are paid before anything is timed.
    Returns the number of frames pushed.
    """
    k = max(int(frames_wanted), method_steady_state_frames(method))
    n = int(frames.shape[0])
    if k <= 0 or n == 0:
        return 0
    h, w = frames.shape[-2:]
    method.prepare(prompt, height=int(h), width=int(w), seed=seed)
    try:
        run_stream(method, torch.stack([frames[i % n] for i in range(k)]))
    finally:
        method.reset()
    return k


# The figures below are described (name, unit, direction) once, in eval/results/schema.py (SYSTEM_METRICS).


def output_fps(emit_time: np.ndarray, by_push: np.ndarray) -> float:
    """Achieved output rate in steady state: frames emitted after the first emission, per second until the last.

    Emissions made by ``push`` count; the final flush (a burst no live stream ever has) only when nothing else is
    there. Frames emitted together with the first one (a warm-up burst) are left out, so a method that releases
    its first frames at once is not credited with a rate above its source.
    """
    finite = np.isfinite(emit_time)
    for times in (emit_time[by_push & finite], emit_time[finite]):
        if times.size == 0:
            continue
        first = times.min()
        later = times[times > first]
        if later.size and later.max() > first:
            return float(later.size / (later.max() - first))
    return float("nan")


def steady_fps(call_s: np.ndarray, steady_from: int) -> float:
    """Frames per second of compute in steady state: the pushes after the method's first ``steady_from`` ones,
    divided by their summed call time (a mean, so a bursty method that works only on every k-th push is charged
    for that work). NaN when the stream never reached its steady state: a rate from buffering pushes (Live2Diff's
    warm-up frames cost almost nothing) would overstate the method's speed.
    """
    pushed = call_s[np.isfinite(call_s)]
    steady = pushed[steady_from:]
    total = float(steady.sum())
    return float(steady.size / total) if steady.size and total > 0 else float("nan")


def summarise(rec: StreamRecord) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-frame and per-video system figures of one stream (the only place they are computed)."""
    lat_ms = rec.latency_s * 1e3
    per_frame: dict[str, np.ndarray] = {"latency_ms": lat_ms, "call_ms": rec.call_s * 1e3}
    call_med = float(np.nanmedian(rec.call_s)) if len(rec.call_s) else float("nan")
    by_push = rec.by_push if rec.by_push is not None else np.ones(len(lat_ms), dtype=bool)
    if rec.paced:  # throughput is the achieved output rate (dropped frames are never pushed)
        fps = output_fps(rec.emit_time, by_push)
    else:  # frames / (first push start -> last emission)
        total = float(np.nanmax(rec.emit_time) - rec.push_start[0]) if len(lat_ms) else float("nan")
        fps = len(lat_ms) / total if total > 0 else float("nan")
    per_video = {
        "latency_p50_ms": float(np.nanpercentile(lat_ms, 50)),
        "latency_p95_ms": float(np.nanpercentile(lat_ms, 95)),
        "latency_p99_ms": float(np.nanpercentile(lat_ms, 99)),
        "first_frame_latency_ms": float(lat_ms[0]),
        "call_p50_ms": call_med * 1e3,
        "fps": fps,
        # per-call throughput after the steady state is reached: what the reference READMEs' FPS figures measure
        "steady_fps": steady_fps(rec.call_s, rec.steady_from),
        "peak_mem_mb": rec.peak_mem_mb,
    }
    if rec.paced:
        lag_s = rec.lag_s
        dropped = (~np.isfinite(rec.push_start)).astype(np.float64)
        per_frame.update({"lag_ms": lag_s * 1e3, "dropped": dropped})
        per_video.update(
            {
                "source_fps": float(rec.extra.get("live", {}).get("fps", float("nan"))),
                "output_fps": fps,
                "drop_ratio": float(dropped.mean()),
                "lag_p50_ms": float(np.nanpercentile(lag_s, 50) * 1e3),
                "lag_p95_ms": float(np.nanpercentile(lag_s, 95) * 1e3),
            }
        )
    return per_frame, per_video
