"""Scale: many videos in one run (memory stays flat), and merging many result folders (seconds, not minutes).

    python benchmarks/scale.py [--videos 200] [--folders 200]

1. One in-process run over ``--videos`` synthetic clips x 2 methods (identity and a stateless inverting method) with
   ``metrics=none``: the process's resident memory is sampled after every unit; the table gives it at the first
   unit, at 10 %, 50 % and at the end, and the growth from 10 % to the end per 100 units.
2. ``--folders`` run folders (one video, 2 methods, all system metrics) written by a real run once and copied, then
   merged by ``eval.results.load_runs`` and by ``eval.report.build_report``: wall-clock seconds of each.

Writes ``benchmarks/results/scale.md`` / ``.json``. Wall-clock figures on a shared machine move with its load.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def many_videos(n: int, tmp: Path) -> dict:
    import torch

    import eval.runner as runner_mod
    from eval.cli import run_from_config

    torch.set_num_threads(1)
    samples: list[float] = []
    original = runner_mod.Runner._unit

    def sampled(self, method_name, video):
        out = original(self, method_name, video)
        samples.append(rss_mb())
        return out

    runner_mod.Runner._unit = sampled
    cfg = compose(
        [
            f"results_root={tmp / 'results'}",
            "method=[identity]",
            "+method.inv._target_=tests.fake_methods.DelayMethod",
            "+method.inv.delay=0",
            f"dataset.num_videos={n}",
            "dataset.num_frames=8",
            "metrics=none",
            "report.enabled=false",
            "runner.save_strips=false",
        ]
    )
    t0 = time.perf_counter()
    s = run_from_config(cfg, run_dir=tmp / "many", progress=False)
    seconds = time.perf_counter() - t0
    runner_mod.Runner._unit = original
    units = len(s.units)
    at = {
        k: samples[max(0, int(round(f * units)) - 1)] for k, f in (("10%", 0.1), ("50%", 0.5), ("end", 1.0))
    }
    tenth = max(1, int(round(0.1 * units)))
    growth = (samples[-1] - samples[tenth - 1]) / max(1, units - tenth) * 100
    return {
        "videos": n,
        "units": units,
        "failed": len(s.failed),
        "seconds": round(seconds, 1),
        "rss_first_mb": round(samples[0], 1),
        **{f"rss_{k}_mb": round(v, 1) for k, v in at.items()},
        "rss_growth_mb_per_100_units_after_10pct": round(growth, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def many_folders(n: int, tmp: Path) -> dict:
    from eval import results
    from eval.cli import run_from_config
    from eval.report import build_report

    cfg = compose(
        [
            f"results_root={tmp / 'results_f'}",
            "method=[identity]",
            "+method.inv._target_=tests.fake_methods.DelayMethod",
            "dataset.num_videos=1",
            "dataset.num_frames=8",
            "metrics=none",
            "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
            "report.enabled=false",
        ]
    )
    one = run_from_config(cfg, run_dir=tmp / "one", progress=False).run_dir
    import pandas as pd

    dirs = []
    for i in range(n):  # the same run as n shards of distinct videos
        d = tmp / "folders" / f"{i:04d}"
        shutil.copytree(one, d)
        for table in ("frames", "videos", "units"):
            df = pd.read_parquet(d / f"{table}.parquet")
            df["video"] = f"video_{i:04d}"
            df.to_parquet(d / f"{table}.parquet", index=False)
        dirs.append(d)
    t0 = time.perf_counter()
    merged = results.load_runs(dirs)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_report(dirs, tmp / "merged")
    t_report = time.perf_counter() - t0
    return {
        "folders": n,
        "videos_merged": int(merged.units.video.nunique()),
        "frame_rows": len(merged.frames),
        "load_runs_seconds": round(t_load, 2),
        "build_report_seconds": round(t_report, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--folders", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = many_videos(args.videos, tmp)
        folders = many_folders(args.folders, tmp)
    out = {
        "command": f"python benchmarks/scale.py --videos {args.videos} --folders {args.folders}",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 1)},
        "many_videos": videos,
        "many_folders": folders,
    }
    res = ROOT / "benchmarks" / "results"
    (res / "scale.json").write_text(json.dumps(out, indent=2) + "\n")
    v, f = videos, folders
    md = [
        "# Scale: many videos in one run, many result folders merged",
        "",
        f"`{out['command']}` — {out['date']}, {out['machine']['cpus']} CPUs, 1-min load average "
        f"{out['machine']['load_avg_1min']} at the end (a shared machine: wall-clock figures move with the load).",
        "",
        f"## {v['videos']} synthetic videos x 2 methods, metrics=none, one process",
        "",
        "| units | failed | seconds | RSS after unit 1 | at 10 % | at 50 % | at the end | growth after 10 % |",
        "|---|---|---|---|---|---|---|---|",
        f"| {v['units']} | {v['failed']} | {v['seconds']} | {v['rss_first_mb']} MB | {v['rss_10%_mb']} MB | "
        f"{v['rss_50%_mb']} MB | {v['rss_end_mb']} MB | {v['rss_growth_mb_per_100_units_after_10pct']} MB / 100 units |",
        "",
        "Memory is not flat yet. Before 2026-11-27 the synthetic dataset kept every loaded clip's ground truth "
        "(~0.8 MB per video, 76 MB / 100 units); that is fixed. What remains: tracemalloc over units 20-100 of a "
        "50-video run shows the Python heap growing by about 1 MB (the run's own per-unit tables, kept until the "
        "end); the rest of the RSS growth is outside the Python heap (allocator / Arrow memory pool) and was not "
        "identified.",
        "",
        f"## Merging {f['folders']} run folders (1 video, 2 methods each)",
        "",
        "| folders | videos merged | frame rows | `results.load_runs` | `build_report` |",
        "|---|---|---|---|---|",
        f"| {f['folders']} | {f['videos_merged']} | {f['frame_rows']} | {f['load_runs_seconds']} s | "
        f"{f['build_report_seconds']} s |",
        "",
    ]
    (res / "scale.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
