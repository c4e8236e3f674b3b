"""CPU speed/memory of every method on the synthetic clips with the ``mid`` model.

Each method runs in its own subprocess (so peak RSS is that method's, not the sum of everything built before it),
through the real runner (``eval.cli.run_from_config``: untimed warm-up frames, per-push timing, end-to-end latency
from push to emission). Writes ``benchmarks/results/methods_cpu.json`` and ``.md``.

    PYTHONPATH=. python benchmarks/methods_cpu.py                       # every conf/method/*.yaml
    PYTHONPATH=. python benchmarks/methods_cpu.py --methods identity,streamdiffusion --videos 1 --frames 16

Per-call time = duration of one ``push`` (what "FPS" figures in papers measure); end-to-end latency = from a frame's
push to the call that emitted it (includes stream-batch lag and windows waiting for future frames).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
OUT = ROOT / "benchmarks" / "results"


def overrides(method: str, args: argparse.Namespace) -> list[str]:
    return [
        f"method=[{method}]",
        f"model={args.model}",
        "hardware=cpu",
        f"hardware.threads={args.threads}",
        f"dataset.num_videos={args.videos}",
        f"dataset.num_frames={args.frames}",
        f"dataset.height={args.size}",
        f"dataset.width={args.size}",
        "runner.resume=false",
        "runner.save_strips=false",
        "report.enabled=false",
    ]


def measure_one(method: str, args: argparse.Namespace) -> dict:
    """Run one method in this process; return its figures."""
    import numpy as np
    from hydra import compose, initialize_config_dir

    from eval.cli import run_from_config

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides(method, args) + [f"results_root={args.tmp}"])
    t0 = time.perf_counter()
    summary = run_from_config(cfg, run_dir=Path(args.tmp) / method, progress=False)
    wall = time.perf_counter() - t0
    if summary.failed:
        return {"method": method, "error": summary.failed[0].error}
    fr, vi = summary.frames, summary.videos

    def frame_pct(metric: str, q: float) -> float:
        return float(np.percentile(fr[fr.metric == metric].value.to_numpy(), q))

    def video_stat(metric: str, how: str) -> float:
        vals = vi[vi.metric == metric].value
        return float(getattr(vals, how)())

    return {
        "method": method,
        "call_p50_ms": frame_pct("call_ms", 50),
        "call_p95_ms": frame_pct("call_ms", 95),
        "e2e_p50_ms": frame_pct("latency_ms", 50),
        "e2e_p95_ms": frame_pct("latency_ms", 95),
        "first_frame_ms": video_stat("first_frame_latency_ms", "median"),
        "fps": video_stat("fps", "mean"),
        "peak_rss_mib": video_stat("peak_mem_mb", "max"),
        "n_frames": int(fr[fr.metric == "call_ms"].shape[0]),
        "wall_s": wall,
    }


def table(rows: list[dict]) -> str:
    head = (
        "| method | per-call p50 (ms) | per-call p95 (ms) | E2E latency p50 (ms) | E2E latency p95 (ms) | "
        "first frame (ms) | FPS | peak RSS (MiB) | RSS over identity (MiB) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    floor = next((r["peak_rss_mib"] for r in rows if r["method"] == "identity" and "error" not in r), None)
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error'][:80]} |||||||| ")
            continue
        lines.append(
            f"| {r['method']} | {r['call_p50_ms']:.1f} | {r['call_p95_ms']:.1f} | {r['e2e_p50_ms']:.1f} | "
            f"{r['e2e_p95_ms']:.1f} | {r['first_frame_ms']:.1f} | {r['fps']:.1f} | {r['peak_rss_mib']:.0f} | "
            + (f"{r['peak_rss_mib'] - floor:.0f} |" if floor is not None else "- |")
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="", help="comma-separated; default: every conf/method/*.yaml")
    p.add_argument("--model", default="mid")
    p.add_argument("--videos", type=int, default=3)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=64, help="frame height = width")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    p.add_argument("--out", default=str(OUT / "methods_cpu"))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one method, print JSON
    p.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    add_smoke_flag(p)
    args = apply_smoke(p, p.parse_args(), dict(methods="identity,live2diff", model="tiny_random", videos=1, frames=10, size=32))
    logging.basicConfig(level=logging.WARNING)
    if args.one:
        print(json.dumps(measure_one(args.one, args)))
        return 0
    methods = [m for m in args.methods.split(",") if m] or sorted(
        f.stem for f in (CONF / "method").glob("*.yaml")
    )
    rows = []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                m,
                "--tmp",
                tmp,
                "--model",
                args.model,
                "--videos",
                str(args.videos),
                "--frames",
                str(args.frames),
                "--size",
                str(args.size),
                "--threads",
                str(args.threads),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            try:
                row = json.loads(res.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                row = {"method": m, "error": (res.stderr.strip().splitlines() or ["no output"])[-1]}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    setup = {
        "command": " ".join([Path(sys.executable).name, "benchmarks/methods_cpu.py", *sys.argv[1:]]),
        "model": args.model,
        "videos": args.videos,
        "frames_per_video": args.frames,
        "frame_size": [args.size, args.size],
        "torch_threads": args.threads,
        "dataset": "synthetic",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    md = (
        f"# Methods on CPU — `{args.model}` model, synthetic clips\n\n"
        f"{args.videos} videos x {args.frames} frames, {args.size}x{args.size}, {args.threads} torch thread(s), "
        f"each method in its own process; {setup['timestamp']}.\n\n{table(rows)}\n\n"
        "Per-call = one `push`; E2E latency = push of a frame to its emission (includes stream-batch lag and "
        "window waits). FPS = frames / (last emission - first push). Peak RSS = whole process (CPU); 'over identity' subtracts the "
        "harness floor (Python + torch + imports) measured the same way.\n\n"
        f"Command: `{setup['command']}`\n"
    )
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
