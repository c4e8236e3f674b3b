"""Peak memory of Live2Diff streaming for a short vs a long stream (the KV-cache must not grow with length).

Each length runs in its own subprocess (peak RSS, ``ru_maxrss``, is per process); frames are generated on the fly
and outputs dropped, so only the method's own state can grow. Also reports the KV-cache size at the end.

    python benchmarks/memory_vs_length.py [--model mid] [--size 64] [--lengths 100 1000] [--threads 1]

Writes benchmarks/results/memory_vs_length.{json,md}.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mid")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--t-index-list", type=int, nargs="+", default=[30, 36, 42])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    add_smoke_flag(ap)
    args = apply_smoke(ap, ap.parse_args(), dict(model="tiny_random", size=32, lengths=[12, 24]))
    if args.child is not None:
        print(json.dumps(child(args.model, args.size, args.child, args.threads, args.t_index_list)))
        return
    runs = []
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
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
