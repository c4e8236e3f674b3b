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

``clock`` and ``sleep`` are injectable; the unit tests drive this with a fake clock and a method of known cost.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from eval.interface import StreamMethod, method_device
from eval.timing import MemoryProbe, MethodContractError, StreamRecord, synchronize

POLICIES = ("drop", "latest", "queue")

# Module-level so tests can swap in a fake clock for a whole run (e.g. one driven through the Runner).
_clock: Callable[[], float] = time.perf_counter
_sleep: Callable[[float], None] = time.sleep


def _next_frame(policy: str, arrival: np.ndarray, current: int, free_at: float) -> int:
    """Source index the method takes next, once it is free at ``free_at`` after processing ``current``."""
    if policy == "queue":
        return current + 1
    if (
        policy == "drop"
    ):  # frames that arrived while busy are gone; wait for the first one at or after free_at
        return max(current + 1, int(np.searchsorted(arrival, free_at, side="left")))
    # latest: the newest frame that has already arrived, else the next one to arrive
    return max(current + 1, int(np.searchsorted(arrival, free_at, side="right")) - 1)


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
    """Replay ``frames`` as a live source at ``fps`` (default: the video's) through ``method``.

    Returns a :class:`StreamRecord` whose ``outputs`` are the frames a viewer sees, ``push_start``/``call_s`` the
    real push times (NaN for dropped frames), ``emit_time`` the emission times (NaN for dropped frames), and
    ``extra`` holding the live figures (``video_metrics``, ``frame_metrics``) that become result rows.
    """
    clock = clock or _clock
    sleep = sleep or _sleep
    rate = float(fps) if fps else float(video_fps)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(
            f"live mode needs a positive frame rate; got video fps {video_fps!r} and "
            f"runner.live.fps {fps!r} (set runner.live.fps)"
        )
    if policy not in POLICIES:
        close = difflib.get_close_matches(str(policy), POLICIES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"runner.live.policy must be one of {', '.join(POLICIES)}, got {policy!r}.{hint}")
    n = int(frames.shape[0])
    shape = tuple(frames.shape[1:])
    device = method_device(method)
    probe = MemoryProbe(device)
    push_start = np.full(n, np.nan)
    call_s = np.full(n, np.nan)
    emit_time = np.full(n, np.nan)
    during_push = np.zeros(n, dtype=bool)  # emitted by a push (not the final flush)
    produced: list[Tensor | None] = [None] * n
    source_of: list[int] = []  # method index -> source index

    def accept(emitted: list, when: float, by_push: bool) -> None:
        if not isinstance(emitted, list):
            raise MethodContractError(
                f"push/flush must return a list of (index, frame), got {type(emitted).__name__}"
            )
        for item in emitted:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise MethodContractError(f"emissions must be (index, frame) tuples, got {item!r:.80}")
            k, out = item
            if not 0 <= int(k) < len(source_of):
                raise MethodContractError(
                    f"emitted index {k} was never pushed ({len(source_of)} frames pushed)"
                )
            j = source_of[int(k)]
            if produced[j] is not None:
                raise MethodContractError(f"frame {k} emitted twice")
            if not isinstance(out, Tensor) or tuple(out.shape) != shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise MethodContractError(f"output frame {k} is {got}, expected a tensor of shape {shape}")
            produced[j] = out
            emit_time[j] = when
            during_push[j] = by_push

    t0 = clock()
    arrival = t0 + np.arange(n) / rate
    i = 0
    while i < n:
        now = clock()
        if now < arrival[i]:
            sleep(float(arrival[i] - now))  # idle until the frame arrives
        start = clock()
        source_of.append(i)
        emitted = method.push(len(source_of) - 1, frames[i])
        synchronize(device)
        end = clock()
        push_start[i], call_s[i] = start, end - start
        accept(emitted, end, True)
        probe.sample()
        i = _next_frame(policy, arrival, i, end)
    start = clock()
    emitted = method.flush()
    synchronize(device)
    end = clock()
    accept(emitted, end, False)
    processed = np.array(source_of, dtype=int)
    missing = [k for k, j in enumerate(source_of) if produced[j] is None]
    if missing:
        raise MethodContractError(f"{len(missing)} pushed frames were never emitted (first: {missing[:5]})")

    shown: list[Tensor] = []
    last = None
    for j in range(n):
        if produced[j] is not None:
            last = produced[j].detach().to("cpu", torch.float32)
        shown.append(last)

    lag_s = emit_time - arrival
    dropped = np.ones(n)
    dropped[processed] = 0.0
    rec = StreamRecord(shown, push_start, call_s, emit_time, end - start, probe.peak_mb())
    video_metrics = {
        "source_fps": rate,
        "output_fps": output_fps(emit_time, during_push),
        "drop_ratio": float(dropped.mean()),
        "lag_p50_ms": float(np.nanpercentile(lag_s, 50) * 1e3),
        "lag_p95_ms": float(np.nanpercentile(lag_s, 95) * 1e3),
        # The offline figures below would count dropped frames or NaN push times; replace them with live ones.
        "fps": output_fps(emit_time, during_push),
        "call_p50_ms": float(np.nanmedian(call_s) * 1e3),
        "steady_fps": float(1.0 / np.nanmedian(call_s)) if np.nanmedian(call_s) > 0 else float("nan"),
    }
    rec.extra = {
        "live": {"fps": rate, "policy": policy, "frames": n, "processed": int(processed.size)},
        "video_metrics": video_metrics,
        "frame_metrics": {"lag_ms": (lag_s * 1e3).tolist(), "dropped": dropped.tolist()},
    }
    return rec


def output_fps(emit_time: np.ndarray, during_push: np.ndarray) -> float:
    """Achieved output rate in steady state: frames emitted after the first emission, per second until the last.

    Emissions made by ``push`` count; the final flush (a burst no live stream ever has) only when nothing else is
    there. Frames emitted together with the first one (a warm-up burst) are left out, so a method that releases
    its first frames at once is not credited with a rate above its source.
    """
    finite = np.isfinite(emit_time)
    for times in (emit_time[during_push & finite], emit_time[finite]):
        if times.size == 0:
            continue
        first = times.min()
        later = times[times > first]
        if later.size and later.max() > first:
            return float(later.size / (later.max() - first))
    return float("nan")
