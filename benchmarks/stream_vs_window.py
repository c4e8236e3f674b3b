"""Per-frame time of Live2Diff's KV-cache streaming vs re-running a bidirectional sliding window, in one process.

Both use the same components (``mid`` model by default), the same ``t_index_list`` and window; only the temporal
attention differs. Streaming: one UNet call per frame holding ``n_steps`` one-frame rows that read the cache.
Window: every frame re-denoises the last ``window`` frames (``n_steps`` calls over ``window`` frames) and keeps the
newest. Timed in steady state (after the warmup / once the window is full), median of per-push wall times.

Also the cost of reading the cache (``--overhead-sizes``): one streaming UNet call (``n_steps`` one-frame rows that
write and read their step's cache) over a plain one-frame call of the same UNet on the same inputs (no cache:
each row attends to itself), the two timed alternately; goal <= 1.05.

    python benchmarks/stream_vs_window.py [--model mid] [--sizes 64 128 256] [--window 16] [--threads 1]

Writes benchmarks/results/stream_vs_window.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's code, not an installed copy

from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

from live2diff.method import Live2DiffMethod  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def clip(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, size // 8, size // 8, generator=g)
    base = torch.nn.functional.interpolate(base[None], size=(size, size), mode="bilinear")[0]
    return torch.stack([torch.roll(base, shifts=(i, 2 * i), dims=(1, 2)) for i in range(n)]).clamp(0, 1)


class UNetTimer:
    """Wall time spent inside the UNet's forward (hooks; CPU, so no synchronisation needed)."""

    def __init__(self, unet: torch.nn.Module):
        self.total, self._t0 = 0.0, 0.0
        unet.register_forward_pre_hook(self._pre)
        unet.register_forward_hook(self._post)

    def _pre(self, *_):
        self._t0 = time.perf_counter()

    def _post(self, *_):
        self.total += time.perf_counter() - self._t0


class Timed:
    """A method with a clip, pushed one frame at a time; records wall, process-CPU and UNet time per push."""

    def __init__(self, method: Live2DiffMethod, frames: torch.Tensor):
        self.m, self.frames, self.i = method, frames, 0
        self.timer = UNetTimer(method.components.unet)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.unet: list[float] = []
        method.prepare("a watercolor painting", height=frames.shape[-2], width=frames.shape[-1], seed=0)

    def push(self, record: bool = True) -> None:
        u0, c0, t0 = self.timer.total, time.process_time(), time.perf_counter()
        self.m.push(self.i, self.frames[self.i])
        t1, c1 = time.perf_counter(), time.process_time()
        if record:
            self.wall.append(t1 - t0)
            self.cpu.append(c1 - c0)
            self.unet.append(self.timer.total - u0)
        self.i += 1


def measure(args, size: int) -> dict:
    """Both modes loaded side by side and pushed *interleaved* (one window frame, then a few streaming frames), so
    that load from other jobs on a shared machine hits both alike; process CPU time is recorded next to wall time."""
    common = dict(model={"size": args.model}, t_index_list=args.t_index_list, window=args.window)
    skip_s = args.warmup + len(args.t_index_list)  # past the warmup push and the pipeline fill
    per_round = max(1, args.stream_frames // args.window_frames)
    n_s = skip_s + per_round * args.window_frames
    n_w = args.window + args.window_frames
    stream = Timed(Live2DiffMethod(**common, warmup=args.warmup, attention="unidirectional"), clip(n_s, size))
    window = Timed(Live2DiffMethod(**common, warmup=0, attention="bidirectional_window"), clip(n_w, size))
    with torch.inference_mode():
        for _ in range(skip_s):
            stream.push(record=False)
        for _ in range(args.window):  # until the window is full
            window.push(record=False)
        for _ in range(args.window_frames):
            window.push()
            for _ in range(per_round):
                stream.push()
    cache_mb = stream.m.stream.cache_bytes() / 2**20
    med = statistics.median

    def stats(t: Timed) -> dict:
        return {
            "wall_median": med(t.wall) * 1e3,
            "wall_min": min(t.wall) * 1e3,
            "cpu_median": med(t.cpu) * 1e3,
            "unet_wall_median": med(t.unet) * 1e3,
            "n": len(t.wall),
        }

    return {
        "resolution": [size, size],
        "stream_ms_per_frame": stats(stream),
        "window_ms_per_frame": stats(window),
        "ratio_wall_median": med(window.wall) / med(stream.wall),
        "ratio_wall_min": min(window.wall) / min(stream.wall),
        "ratio_cpu_median": med(window.cpu) / med(stream.cpu),
        "ratio_unet_wall_median": med(window.unet) / med(stream.unet),
        "stream_kv_cache_MiB": cache_mb,
    }


def cache_overhead(args, size: int) -> dict:
    """Streaming UNet call / plain one-frame call of the same UNet on the same inputs, timed alternately."""
    m = Live2DiffMethod(
        model={"size": args.model}, t_index_list=args.t_index_list, window=args.window, warmup=args.warmup
    )
    s, unet = m.stream, m.components.unet
    frames = clip(args.warmup + len(args.t_index_list) + args.window, size)
    m.prepare("a watercolor painting", height=size, width=size, seed=0)
    seen: dict = {}

    def capture(_module, a, kw):
        seen.update(args=a, feat=s.depth_injector.feat)

    handle = unet.register_forward_pre_hook(capture, with_kwargs=True)
    with torch.inference_mode():
        for i, f in enumerate(frames):  # warmup, pipeline fill, then the ring wraps: steady state
            m.push(i, f)
    handle.remove()
    x, t, emb = seen["args"]
    steps = list(range(s.n_steps))

    def call(stream: bool) -> tuple[float, float]:
        s.depth_injector.feat = seen["feat"]
        ctx = s.ctl.stream(steps) if stream else s.ctl.full()
        c0, t0 = time.thread_time(), time.perf_counter()
        with ctx:
            unet(x, t, emb)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        return cpu, wall

    ts, tp = [], []  # (thread CPU, wall) per call
    with torch.inference_mode():
        for _ in range(2):
            call(True), call(False)
        for i in range(args.overhead_reps):  # ABBA: a drift of the machine's speed hits both alike
            pair = (call(True), call(False)) if i % 2 == 0 else tuple(reversed((call(False), call(True))))
            ts.append(pair[0])
            tp.append(pair[1])
    s.depth_injector.feat = None
    med = statistics.median
    out = {"resolution": [size, size], "rows": len(steps), "n": len(ts)}
    for j, clock in enumerate(("thread", "wall")):
        a, b = [r[j] for r in ts], [r[j] for r in tp]
        out[clock] = {
            "stream_call_ms_median": med(a) * 1e3,
            "plain_call_ms_median": med(b) * 1e3,
            "ratio_median": med(a) / med(b),
            "ratio_paired_median": med([x / y for x, y in zip(a, b)]),
            "ratio_min": min(a) / min(b),
        }
    return {
        **out,
        "kernel": getattr(s.ctl.processors[0].cache, "kernel", "bmm"),  # "bmm": before the kernels existed
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mid")
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256])
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--t-index-list", type=int, nargs="+", default=[30, 36, 42])
    ap.add_argument("--stream-frames", type=int, default=15, help="timed frames, streaming")
    ap.add_argument("--window-frames", type=int, default=5, help="timed frames, sliding window")
    ap.add_argument("--overhead-sizes", type=int, nargs="*", default=[64, 128])
    ap.add_argument("--overhead-reps", type=int, default=40, help="timed pairs of calls per size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--before",
        type=Path,
        default=None,
        help="stream_vs_window.json written by this script on an earlier commit (same machine, run right before): "
        "its cache-overhead rows are shown beside this run's",
    )
    ap.add_argument("--before-label", default="before", help="how the --before rows are labelled")
    add_smoke_flag(ap)
    args = apply_smoke(
        ap,
        ap.parse_args(),
        dict(
            model="tiny_random",
            sizes=[32],
            stream_frames=2,
            window_frames=1,
            overhead_sizes=[32],
            overhead_reps=2,
        ),
    )
    torch.set_num_threads(args.threads)
    overhead = []
    for size in args.overhead_sizes:
        overhead.append(cache_overhead(args, size))
        print(json.dumps(overhead[-1]), flush=True)
    measured = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for size in args.sizes:
        rows.append({**measure(args, size), "measured": measured})
        print(json.dumps(rows[-1]), flush=True)
    previous = args.out / "stream_vs_window.json"
    if not args.sizes and previous.is_file():  # --sizes with no value: only the cache overhead is re-measured
        old = json.loads(previous.read_text())
        rows = [
            {
                "measured": old.get("measured", "an earlier run"),
                "load_average_1m": old.get("load_average_1m"),
                **r,
            }
            for r in old.get("rows", [])
        ]
    result = {
        "measured": measured,
        "benchmark": "stream_vs_window",
        "model": args.model,
        "window": args.window,
        "warmup": args.warmup,
        "t_index_list": args.t_index_list,
        "device": "cpu",
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "expected_ratio_approx": args.window,
        "rows": rows,
        "cache_overhead": overhead,
        "cache_overhead_goal": 1.05,
        "cache_overhead_before": None
        if args.before is None
        else {
            "label": args.before_label,
            **{k: json.loads(args.before.read_text())[k] for k in ("measured", "cache_overhead")},
        },
        "load_average_1m": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stream_vs_window.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# KV-cache streaming vs bidirectional sliding window (per-frame time)",
        "",
        f"Run of {measured}.",
        "",
        f"`{args.model}` model, window {args.window}, warmup {args.warmup}, t_index_list {args.t_index_list}, "
        f"CPU, {args.threads} thread(s), torch {torch.__version__}. Steady state (after the warmup and pipeline "
        "fill / once the window is full); both modes loaded in one process and pushed interleaved. Per-frame time "
        "includes VAE encode/decode and depth in both modes."
        + (
            ""
            if args.sizes or not rows
            else f" Rows carried over from the run of {rows[0]['measured']} (this run re-measured only the cache "
            "overhead below)."
        ),
        "",
        "| resolution | streaming ms/frame (wall / CPU) | window ms/frame (wall / CPU) | ratio wall | ratio CPU "
        "| ratio UNet only | ratio wall (min) | KV-cache MiB |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['resolution'][0]}x{r['resolution'][1]} "
            f"| {r['stream_ms_per_frame']['wall_median']:.0f} / {r['stream_ms_per_frame']['cpu_median']:.0f} "
            f"| {r['window_ms_per_frame']['wall_median']:.0f} / {r['window_ms_per_frame']['cpu_median']:.0f} "
            f"| **{r['ratio_wall_median']:.1f}x** | {r['ratio_cpu_median']:.1f}x | {r['ratio_unet_wall_median']:.1f}x "
            f"| {r['ratio_wall_min']:.1f}x | {r['stream_kv_cache_MiB']:.1f} |"
            for r in rows
        ],
        "",
        "Medians over the timed frames (CPU = process CPU time, less sensitive to other jobs on the machine). "
        + (
            f"1-minute load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."
            if args.sizes or not rows
            else f"1-minute load average at that run: {rows[0].get('load_average_1m')} on {os.cpu_count()} cores."
        ),
        f"Expected about {args.window}x: the window re-denoises {args.window} frames at every step for each output, "
        "streaming denoises one (plus cached keys/values). The end-to-end ratio is diluted by the per-frame work "
        "both modes share (VAE encode/decode, depth net, mapping network) and, at small latents, by per-call "
        "overhead that does not scale with the number of frames; the UNet-only column isolates the attention "
        "scheme.",
        "",
        "## Cost of reading the cache",
        "",
        "One streaming UNet call (rows at every denoising step, each writing and reading its step's cache) over a "
        "plain one-frame call of the same UNet on the same inputs (no cache), timed alternately (ABBA) in one "
        f"process, {args.overhead_reps} pairs; goal <= 1.05. Thread = CPU time of the calling thread (what the call "
        "costs; time preempted by other processes on the shared machine is not counted), wall = elapsed time.",
        "",
        "| resolution | rows | kernel | clock | streaming call ms | plain call ms | ratio (medians) "
        "| ratio (paired median) | ratio (min) |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['resolution'][0]}x{r['resolution'][1]} | {r['rows']} | {r['kernel']} | {clock} "
            f"| {r[clock]['stream_call_ms_median']:.1f} | {r[clock]['plain_call_ms_median']:.1f} "
            f"| **{r[clock]['ratio_median']:.3f}** | {r[clock]['ratio_paired_median']:.3f} "
            f"| {r[clock]['ratio_min']:.3f} |"
            for r in overhead
            for clock in ("thread", "wall")
        ],
        "",
        *(
            []
            if args.before is None
            else [
                "",
                f"{args.before_label} (same script, run {result['cache_overhead_before']['measured']}):",
                "",
                "| resolution | clock | streaming call ms | plain call ms | ratio (medians) | ratio (paired median) |",
                "|---|---|---|---|---|---|",
                *[
                    f"| {r['resolution'][0]}x{r['resolution'][1]} | {clock} | {r[clock]['stream_call_ms_median']:.1f} "
                    f"| {r[clock]['plain_call_ms_median']:.1f} | {r[clock]['ratio_median']:.3f} "
                    f"| {r[clock]['ratio_paired_median']:.3f} |"
                    for r in result["cache_overhead_before"]["cache_overhead"]
                    for clock in ("thread", "wall")
                ],
            ]
        ),
        "",
        f"1-minute load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.",
        "",
        "Command: `python benchmarks/stream_vs_window.py "
        + f"--model {args.model} --sizes {' '.join(map(str, args.sizes))} --window {args.window} --threads {args.threads}"
        + f" --overhead-sizes {' '.join(map(str, args.overhead_sizes))} --overhead-reps {args.overhead_reps}"
        + (f" --before {args.before}" if args.before else "")
        + "`",
        "",
    ]
    (args.out / "stream_vs_window.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
