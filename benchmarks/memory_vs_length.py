"""Peak memory of Live2Diff streaming for a short vs a long stream (the KV-cache must not grow with length).

Each length runs in its own subprocess (peak RSS, ``ru_maxrss``, is per process); frames are generated on the fly
and outputs dropped, so only the method's own state can grow. Also reports the KV-cache size at the end.

    python benchmarks/memory_vs_length.py [--model mid] [--size 64] [--lengths 100 1000] [--threads 1]

Writes benchmarks/results/memory_vs_length.{json,md}.

``--runner``: the whole harness instead: one full run_eval unit (synthetic clip, ``--methods``, every default
metric, strips and x-t slices) per length and method, each in its own process, as ``run_eval.py`` composes it.
The peak RSS is sampled by this process every 10 ms (the child's ``ru_maxrss`` is reset by the unit's own memory
probe); the child's ``VmHWM`` since its unit started and the unit's ``peak_mem_mb`` are reported too. Writes
benchmarks/results/memory_vs_length_runner.{json,md}.

    python benchmarks/memory_vs_length.py --runner --size 128 --lengths 100 400 --methods identity live2diff
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def child(model: str, size: int, n: int, threads: int, t_index_list: list[int]) -> dict:
    import psutil
    import torch

    from live2diff.method import Live2DiffMethod

    torch.set_num_threads(threads)
    m = Live2DiffMethod(model={"size": model}, t_index_list=t_index_list)
    m.prepare("a watercolor painting", height=size, width=size, seed=0)
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(
        torch.rand(1, 3, size // 8, size // 8, generator=g), size=(size, size)
    )[0]
    proc = psutil.Process()
    rss_at = {}
    emitted = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(n):
            emitted += len(m.push(i, torch.roll(base, shifts=(i % size, (2 * i) % size), dims=(1, 2))))
            if (i + 1) in (50, 100, n // 2, n):
                rss_at[i + 1] = proc.memory_info().rss
        emitted += len(m.flush())
    assert emitted == n, (emitted, n)
    return {
        "frames": n,
        "seconds": time.perf_counter() - t0,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_bytes_at_frame": rss_at,
        "kv_cache_bytes": m.stream.cache_bytes(),
        "kv_cache_shapes": m.stream.ctl.cache_shapes()[:2],
    }


RUNNER_CHILD = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from eval.cli import run_from_config
from tests.conftest import compose

root, method, n, size = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
cfg = compose([f"results_root={root}", f"method=[{method}]", "dataset.num_videos=1", f"dataset.num_frames={n}",
               f"dataset.height={size}", f"dataset.width={size}", "report.enabled=false"])
s = run_from_config(cfg, run_dir=root / "run", progress=False)
assert not s.failed, [u.error for u in s.failed]
v = s.videos
peak = float(v[v.metric == "peak_mem_mb"].value.iloc[0])
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0] / 1024
print(json.dumps({"n_frames": s.units[0].n_frames, "unit_peak_mem_mb": peak, "vmhwm_since_unit_mib": hwm,
                  "metrics": sorted(set(s.frames.metric))}))
"""


def runner_child(method: str, n: int, size: int, threads: int, env: dict) -> dict:
    import tempfile

    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(env, OMP_NUM_THREADS=str(threads))
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER_CHILD, str(ROOT), tmp, method, str(n), str(size)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        ps, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.01)
        out, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"{method} x {n} frames failed:\n{err[-3000:]}")
        return {
            "method": method,
            "frames": n,
            "seconds": time.perf_counter() - t0,
            "sampled_peak_rss_mib": peak / 2**20,
            **json.loads(out.strip().splitlines()[-1]),
        }


def runner_main(args: argparse.Namespace, env: dict) -> None:
    if args.malloc_mmap_threshold:
        env = dict(env, MALLOC_MMAP_THRESHOLD_=str(args.malloc_mmap_threshold))
    runs = [runner_child(m, n, args.size, args.threads, env) for m in args.methods for n in args.lengths]
    rows, ratios = [], {}
    for m in args.methods:
        mine = [r for r in runs if r["method"] == m]
        ratios[m] = mine[-1]["sampled_peak_rss_mib"] / mine[0]["sampled_peak_rss_mib"]
        rows += [
            f"| {m} | {r['frames']} | {r['sampled_peak_rss_mib']:.1f} | {r['vmhwm_since_unit_mib']:.1f} | "
            f"{r['unit_peak_mem_mb']:.1f} | {r['seconds']:.0f} |"
            for r in mine
        ]
    load = os.getloadavg()
    result = {
        "benchmark": "memory_vs_length_runner",
        "resolution": [args.size, args.size],
        "threads": args.threads,
        "malloc_mmap_threshold": args.malloc_mmap_threshold,
        "load_average": load,
        "runs": runs,
        "peak_rss_ratio_long_over_short": ratios,
        "goal_max_ratio": 1.1,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory_vs_length_runner.json").write_text(json.dumps(result, indent=2) + "\n")
    cmd = (
        f"python benchmarks/memory_vs_length.py --runner --size {args.size} --lengths "
        f"{' '.join(map(str, args.lengths))} --methods {' '.join(args.methods)} --threads {args.threads}"
        + (f" --malloc-mmap-threshold {args.malloc_mmap_threshold}" if args.malloc_mmap_threshold else "")
    )
    md = [
        "# Peak memory vs video length: one full run_eval unit (harness + method + every default metric)",
        "",
        f"Synthetic clip {args.size}x{args.size}, CPU, {args.threads} thread(s), one process per run; load average "
        f"at the end {load[0]:.1f}. Sampled peak RSS: the whole process every 10 ms (imports and weights "
        "included); VmHWM: the child's high-water since its unit's probe; unit peak: the unit's peak_mem_mb.",
        "",
        "| method | frames | sampled peak RSS (MiB) | VmHWM since unit (MiB) | unit peak_mem_mb | wall (s) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        *[f"Peak RSS ratio longest / shortest, {m}: **{r:.3f}x** (goal <= 1.1x)." for m, r in ratios.items()],
        "",
        f"Command: `{cmd}`",
        "",
    ]
    (args.out / "memory_vs_length_runner.md").write_text("\n".join(md))
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mid")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--t-index-list", type=int, nargs="+", default=[30, 36, 42])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--runner", action="store_true", help="measure a full run_eval unit, not the method alone")
    ap.add_argument("--methods", nargs="+", default=["identity", "live2diff"], help="with --runner")
    ap.add_argument(
        "--malloc-mmap-threshold", type=int, default=0, help="with --runner: glibc's, fixed (0: glibc's dynamic one)"
    )
    add_smoke_flag(ap)
    small = dict(model="tiny_random", size=32, lengths=[12, 24])
    args = apply_smoke(ap, ap.parse_args(), small)
    if args.runner and args.smoke and args.methods == ap.get_default("methods"):
        args.methods = ["identity"]
    if args.child is not None:
        print(json.dumps(child(args.model, args.size, args.child, args.threads, args.t_index_list)))
        return
    runs = []
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if args.runner:
        runner_main(args, env)
        return
    for n in args.lengths:
        cmd = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--size",
            str(args.size),
            "--threads",
            str(args.threads),
            "--t-index-list",
            *map(str, args.t_index_list),
            "--child",
            str(n),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    short, long = runs[0], runs[-1]
    ratio = long["peak_rss_bytes"] / short["peak_rss_bytes"]
    result = {
        "benchmark": "memory_vs_length",
        "model": args.model,
        "resolution": [args.size, args.size],
        "t_index_list": args.t_index_list,
        "device": "cpu",
        "threads": args.threads,
        "runs": runs,
        "peak_rss_ratio_long_over_short": ratio,
        "expected_max_ratio": 1.05,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory_vs_length.json").write_text(json.dumps(result, indent=2) + "\n")
    mib = 2**20
    md = [
        "# Peak memory vs stream length (Live2Diff streaming, KV-cache)",
        "",
        f"`{args.model}` model, {args.size}x{args.size}, t_index_list {args.t_index_list}, CPU, {args.threads} "
        "thread(s); one subprocess per length, peak RSS of the whole process (weights included).",
        "",
        "| frames | peak RSS (MiB) | KV-cache (MiB) | wall (s) |",
        "|---|---|---|---|",
        *[
            f"| {r['frames']} | {r['peak_rss_bytes'] / mib:.1f} | {r['kv_cache_bytes'] / mib:.2f} | {r['seconds']:.0f} |"
            for r in runs
        ],
        "",
        f"Peak RSS ratio {long['frames']} / {short['frames']} frames: **{ratio:.3f}x** (expected <= 1.05x).",
        "",
        "Command: `python benchmarks/memory_vs_length.py "
        + f"--model {args.model} --size {args.size} --lengths {' '.join(map(str, args.lengths))} --threads {args.threads}`",
        "",
    ]
    (args.out / "memory_vs_length.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
