"""Live-mode tables: methods replayed at the source frame rate, per drop/queue policy.

    python benchmarks/live_mode.py [--methods identity,busy,live2diff] [--heavy-iterations 600] [-- overrides]

Runs ``python run_eval.py runner.mode=live`` (synthetic clips at 12 FPS, CPU, one torch thread) for each scenario
below and writes ``benchmarks/results/live_mode.md`` / ``.json``: per method, the mean over videos of the achieved
output rate, dropped-frame ratio, lag p50/p95 and the quality metrics on the frames a viewer sees. Wall-clock
figures: on a shared machine they move with the load, which is part of what a live user sees.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["source_fps", "output_fps", "drop_ratio", "lag_p50_ms", "lag_p95_ms", "call_p50_ms", "steady_fps"]


def run(results_root: Path, overrides: list[str]) -> tuple[pd.DataFrame, str]:
    cmd = [
        sys.executable,
        "run_eval.py",
        "runner.mode=live",
        f"results_root={results_root}",
        "report.print=false",
        "hardware.threads=1",
        "hydra.job_logging.root.level=WARNING",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    run_dir = Path(proc.stdout.strip().splitlines()[-1].split("results: ", 1)[1])
    videos = pd.read_parquet(run_dir / "videos.parquet")
    return videos, "python " + " ".join(
        shlex.quote(c) for c in cmd[1:] if not c.startswith(("results_root", "hydra.job"))
    )


def table(videos: pd.DataFrame) -> pd.DataFrame:
    wide = videos.pivot_table(index="method", columns="metric", values="value", aggfunc="mean")
    quality = [
        c
        for c in wide.columns
        if c not in COLUMNS
        and c
        not in (
            "fps",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
            "first_frame_latency_ms",
            "peak_mem_mb",
            "nonfinite_frames",
        )
    ]
    return wide[[c for c in COLUMNS + quality if c in wide.columns]]


def markdown(df: pd.DataFrame) -> str:
    cols = ["method", *df.columns]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m, r in df.iterrows():
        out.append("| " + " | ".join([m, *(f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}" for v in r)]) + " |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="identity,busy,live2diff")
    p.add_argument(
        "--heavy-iterations", type=int, default=600, help="busy work that exceeds the frame interval"
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "live_mode")
    p.add_argument("overrides", nargs="*")
    add_smoke_flag(p)
    args = apply_smoke(p, p.parse_args(), dict(methods="identity,live2diff", heavy_iterations=20))
    scenarios = [
        (
            "default methods, drop policy",
            [f"method=[{args.methods}]", "model=tiny", "runner.live.policy=drop"],
        ),
        (
            f"busy with {args.heavy_iterations} products per frame (slower than the 83 ms frame interval), drop",
            ["method=[busy]", f"method.busy.iterations={args.heavy_iterations}", "runner.live.policy=drop"],
        ),
        (
            "the same, latest policy",
            ["method=[busy]", f"method.busy.iterations={args.heavy_iterations}", "runner.live.policy=latest"],
        ),
        (
            "the same, queue policy",
            ["method=[busy]", f"method.busy.iterations={args.heavy_iterations}", "runner.live.policy=queue"],
        ),
        (
            "mid model, 48-frame clips (past Live2Diff's 8 warm-up frames), drop. Random weights: mid's random "
            "TAESD decodes every latent to flat grey, so its quality columns are degenerate; the timing columns "
            "are the point",
            [
                "method=[live2diff,streamdiffusion,per_frame_img2img]",
                "model=mid",
                "dataset.num_frames=48",
                "runner.live.policy=drop",
            ],
        ),
        (
            "mid live2diff, 48-frame clips, latest policy",
            ["method=[live2diff]", "model=mid", "dataset.num_frames=48", "runner.live.policy=latest"],
        ),
        (
            "tiny live2diff at 100 FPS (a 10 ms frame interval), drop",
            ["method=[identity,live2diff]", "model=tiny", "runner.live.fps=100", "runner.live.policy=drop"],
        ),
    ]
    if args.smoke:  # the first scenario and one heavy one, on one short video
        scenarios = scenarios[:2]
        args.overrides = ["dataset.num_videos=1", "dataset.num_frames=12", *args.overrides]
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    md = [
        "# Live mode",
        "",
        f"Measured {started} on a shared 2-CPU machine (load average "
        f"{os.getloadavg()[0]:.2f} at start); synthetic clips (3 videos x 24 frames unless noted, 64x64, 12 FPS), "
        "CPU, one "
        "torch thread. Mean over videos. Lag = arrival of a frame -> emission of its output; quality "
        "(frame_diff etc.) on the frames a viewer sees. Regenerate: `python benchmarks/live_mode.py`.",
        "",
    ]
    result = {"started": started, "scenarios": []}
    with tempfile.TemporaryDirectory(prefix="live_mode_") as tmp:
        for i, (title, overrides) in enumerate(scenarios):
            videos, cmd = run(Path(tmp) / str(i), [*overrides, *args.overrides])
            df = table(videos)
            md += [f"## {title}", "", f"`{cmd}`", "", markdown(df), ""]
            result["scenarios"].append(
                {"title": title, "command": cmd, "table": df.reset_index().to_dict("records")}
            )
            print(md[-5], "\n", md[-2], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
