"""Harness cost: what the evaluation itself spends per frame, outside any method (issue 16, "Harness cost").

    python benchmarks/harness_cost.py [--data ../shared/data/davis] [--reps 3] [--rerun]

1. **Per frame, end to end.** ``run_from_config`` with ``dataset=davis`` (the real DAVIS JPEG folders in
   ``../shared/data``, 854x480), ``dataset.size=[512,512]``, ``method=[identity] metrics=none``, the report on, a
   fresh results root each time (nothing cached), at ``dataset.max_frames`` 8 and 40 over all videos, ``--reps``
   times alternately. Per-frame cost = (median wall at 40 - median at 8) / (32 x videos): decoding, resizing,
   the driver's bookkeeping, scoring the system figures, the unit store and the report — the fixed costs
   (config, set-up, warm-up, the report's plots) cancel.
2. **Breakdown** on one video's 40 frames (median of ``--reps``): JPEG decode, resize to 512x512 (crop included),
   conversion to a float tensor, the stream driver (``run_stream`` with identity), per frame; "scoring, store,
   report" is the end-to-end figure minus those.
3. **Decoded once per run.** ``method=[identity, inv]`` (inv: a stateless test method) over 40 frames: how many
   times a video was decoded (``Video.load`` calls; the number of videos when each is decoded once) and the wall
   time.
4. ``--rerun``: ``python run_eval.py`` (the default evaluation) twice on a fresh results root in subprocesses;
   the second is all cache hits. Its wall time, and whether it built a method or a metric (log lines).

Writes ``benchmarks/results/harness_cost.{json,md}``. Timings on a shared machine move with its load (recorded).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
SHARED_DATA = Path(os.environ.get("LIVE2DIFF_BENCH_SHARED_DATA") or ROOT.parent / "shared" / "data")
SIZE = 512


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def davis_overrides(data: Path, tmp: Path, frames: int) -> list[str]:
    return [
        f"results_root={tmp}",
        "dataset=davis",
        f"dataset.root={data}",
        f"dataset.size=[{SIZE},{SIZE}]",
        f"dataset.max_frames={frames}",
        "method=[identity]",
        "metrics=none",
        "report.print=false",
    ]


def one_run(data: Path, frames: int, extra: list[str] = ()) -> tuple[float, object]:
    from eval.cli import run_from_config

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        cfg = compose([*davis_overrides(data, Path(tmp), frames), *extra])
        t0 = time.perf_counter()
        summary = run_from_config(cfg, run_dir=Path(tmp) / "run", progress=False)
        seconds = time.perf_counter() - t0
        if summary.failed:
            raise RuntimeError(f"units failed: {[u.error for u in summary.failed]}")
    return seconds, summary


def end_to_end(data: Path, n_videos: int, reps: int) -> dict:
    one_run(data, 8)  # imports, first-use costs
    walls: dict[int, list[float]] = {8: [], 40: []}
    for _ in range(reps):
        for n in (8, 40):
            walls[n].append(one_run(data, n)[0])
    med = {n: statistics.median(v) for n, v in walls.items()}
    per_frame = (med[40] - med[8]) / (32 * n_videos)
    return {
        "videos": n_videos,
        "wall_s": {str(n): [round(x, 3) for x in v] for n, v in walls.items()},
        "median_s": {str(n): round(v, 3) for n, v in med.items()},
        "per_frame_ms": round(per_frame * 1e3, 2),
    }


def breakdown(data: Path, reps: int) -> dict:
    """Per-frame cost of each stage on one video's first 40 frames."""
    import numpy as np
    import torch
    from PIL import Image

    from baselines.identity import IdentityMethod
    from eval.datasets.base import FrameTransform
    from eval.datasets.files import list_frame_files, to_frames

    try:
        from eval.datasets.base import uint8_frames_to_float
    except ImportError:  # the code before the fitted path
        uint8_frames_to_float = None
    from eval.timing import MemoryProbe, run_stream

    folder = sorted(p for p in (data / "JPEGImages" / "480p").iterdir() if p.is_dir())[0]
    files = list_frame_files(folder)[:40]
    t = FrameTransform((SIZE, SIZE), "resize_crop", 8, 40)
    fitted = (
        uint8_frames_to_float is not None
    )  # this project's code before the fitted path: float resize at full size
    stages: dict[str, list[float]] = {"decode": [], "resize": [], "to_tensor": [], "driver": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        imgs = []
        for f in files:
            with Image.open(f) as img:
                imgs.append(np.asarray(img.convert("RGB") if img.mode != "RGB" else img))
        t1 = time.perf_counter()
        if fitted:
            arrs = [t.fit_uint8(a) for a in imgs]
            t2 = time.perf_counter()
            frames = uint8_frames_to_float(arrs)
            t3 = time.perf_counter()
        else:  # as eval/datasets/files.py did: full-size float frames, then the float resize and crop
            arrs = [a.copy() for a in imgs]
            tt = time.perf_counter()
            full = to_frames(arrs)
            t2b = time.perf_counter()
            frames = t.spatial(full)
            t3 = time.perf_counter()
            t2 = t1 + (t3 - t2b)  # resize
            t3 = t2 + (t2b - tt)  # to tensor
        method = IdentityMethod()
        method.prepare("p", height=SIZE, width=SIZE, seed=0)
        t4 = time.perf_counter()
        run_stream(method, frames, memory=MemoryProbe("cpu"))
        t5 = time.perf_counter()
        n = len(files)
        for k, v in (("decode", t1 - t0), ("resize", t2 - t1), ("to_tensor", t3 - t2), ("driver", t5 - t4)):
            stages[k].append(v / n * 1e3)
        del imgs, arrs, frames
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {
        "video": folder.name,
        "frames": len(files),
        "path": "resized in 8 bits, then converted" if fitted else "float resize at full size",
        "per_frame_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()},
    }


def decode_once(data: Path) -> dict:
    from eval.datasets import base

    calls = [0]
    original = base.Video.load

    def load(self):
        calls[0] += 1
        return original(self)

    base.Video.load = load
    try:
        seconds, s = one_run(
            data, 40, ["+method.inv._target_=tests.fake_methods.DelayMethod", "+method.inv.delay=0"]
        )
    finally:
        base.Video.load = original
    return {
        "methods": 2,
        "videos": len({u.video for u in s.units}),
        "units": len(s.units),
        "decodes": calls[0],
        "seconds": round(seconds, 2),
    }


def rerun() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("first", "second"):
            t0 = time.perf_counter()
            p = subprocess.run(
                [sys.executable, "run_eval.py", f"results_root={tmp}", "report.print=false"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - t0
            log = p.stdout + p.stderr
            out[label] = {
                "seconds": round(seconds, 1),
                "exit": p.returncode,
                "methods_built": log.count("building method"),
                # open_clip logs each model it creates; the depth_error metric warns when it builds its random net
                "clip_models_built": log.count("Instantiating model architecture"),
                "depth_nets_built": log.count("using a tiny random depth net"),
                "load_avg_1min": round(os.getloadavg()[0], 1),
            }
            if p.returncode != 0:
                out[label]["tail"] = log[-2000:]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "davis")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rerun", action="store_true", help="also time a fully cached re-run of run_eval.py")
    ap.add_argument(
        "--before",
        type=Path,
        help="harness_cost.json written by this script on an earlier commit (run just before): shown beside",
    )
    ap.add_argument("--before-label", default="before", help="what --before was (e.g. its commit)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add_smoke_flag(ap)
    args = apply_smoke(ap, ap.parse_args(), dict(reps=1))
    import torch

    torch.set_num_threads(1)
    if not (args.data / "JPEGImages" / "480p").is_dir():
        sys.exit(f"--data {args.data}: expected the DAVIS layout JPEGImages/480p/<video>/*.jpg")
    n_videos = sum(1 for p in (args.data / "JPEGImages" / "480p").iterdir() if p.is_dir())
    load_start = os.getloadavg()[0]
    e2e = end_to_end(args.data, n_videos, args.reps)
    parts = breakdown(args.data, args.reps)
    once = decode_once(args.data)
    cached = rerun() if args.rerun else None
    out = {
        "command": "python benchmarks/harness_cost.py" + (" --rerun" if args.rerun else ""),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1min_start": round(load_start, 1),
            "load_avg_1min_end": round(os.getloadavg()[0], 1),
            "threads": 1,
        },
        "size": SIZE,
        "end_to_end": e2e,
        "breakdown": parts,
        "decode_once": once,
        "cached_rerun": cached,
    }
    if args.before:
        out["before"] = {"label": args.before_label, **json.loads(args.before.read_text())}
    res = args.out
    res.mkdir(parents=True, exist_ok=True)
    (res / "harness_cost.json").write_text(json.dumps(out, indent=2) + "\n")
    before = out.get("before")
    cols = ["before", "after"] if before else ["this run"]
    runs = [before, out] if before else [out]

    def row(label: str, get, unit: str = "", bold: bool = False) -> str:
        cells = []
        for r in runs:
            try:
                v = get(r)
            except (KeyError, TypeError):
                v = None
            text = "-" if v is None else f"{v}{unit}"
            cells.append(f"**{text}**" if bold and r is out else text)
        return f"| {label} | " + " | ".join(cells) + " |"

    def rest(r: dict) -> float:
        return round(r["end_to_end"]["per_frame_ms"] - sum(r["breakdown"]["per_frame_ms"].values()), 2)

    head = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    md = [
        "# Harness cost per frame (DAVIS JPEG folders, 512x512, method=[identity] metrics=none)",
        "",
        f"`{out['command']}` — {out['date']}, {out['machine']['cpus']} CPUs, 1 thread, 1-min load average "
        f"{out['machine']['load_avg_1min_start']} at the start, {out['machine']['load_avg_1min_end']} at the end "
        "(a shared machine: figures move with its load).",
    ]
    if before:
        md.append(
            f"Before: {before['label']}, the same script run just before ({before['date']}, load "
            f"{before['machine']['load_avg_1min_start']} -> {before['machine']['load_avg_1min_end']})."
        )
    md += [
        "",
        f"## End to end: {e2e['videos']} videos, 8 vs 40 frames each, {args.reps} runs each (median)",
        "",
        *head,
        row("wall, 8 frames a video", lambda r: r["end_to_end"]["median_s"]["8"], " s"),
        row("wall, 40 frames a video", lambda r: r["end_to_end"]["median_s"]["40"], " s"),
        row("**per frame** (slope)", lambda r: r["end_to_end"]["per_frame_ms"], " ms", bold=True),
        "",
        f"## Breakdown per frame ({parts['video']}, {parts['frames']} frames)",
        "",
        *head,
        row("path", lambda r: r["breakdown"]["path"]),
        row("decode (JPEG)", lambda r: r["breakdown"]["per_frame_ms"]["decode"], " ms"),
        row("resize + crop", lambda r: r["breakdown"]["per_frame_ms"]["resize"], " ms"),
        row("to float tensor", lambda r: r["breakdown"]["per_frame_ms"]["to_tensor"], " ms"),
        row("driver (identity)", lambda r: r["breakdown"]["per_frame_ms"]["driver"], " ms"),
        row("scoring, store, report (the rest of the slope)", rest, " ms"),
        "",
        f"## Each video decoded once per run: `method=[identity, inv]`, {once['videos']} videos x 40 frames",
        "",
        *head,
        row("units", lambda r: r["decode_once"]["units"]),
        row("decodes (`Video.load` calls)", lambda r: r["decode_once"]["decodes"], bold=True),
        row("wall", lambda r: r["decode_once"]["seconds"], " s"),
        "",
    ]
    if cached:
        md += [
            "## Fully cached re-run of the default evaluation (`python run_eval.py` twice, fresh results root)",
            "",
            *head,
            row("first run", lambda r: r["cached_rerun"]["first"]["seconds"], " s"),
            row(
                "second run (all units cached)",
                lambda r: r["cached_rerun"]["second"]["seconds"],
                " s",
                bold=True,
            ),
            row("second run: methods built", lambda r: r["cached_rerun"]["second"]["methods_built"]),
            row(
                "second run: CLIP models built",
                lambda r: r["cached_rerun"]["second"].get("clip_models_built"),
            ),
            row(
                "second run: depth nets built", lambda r: r["cached_rerun"]["second"].get("depth_nets_built")
            ),
            row("load at the second run", lambda r: r["cached_rerun"]["second"]["load_avg_1min"]),
            "",
        ]
    (res / "harness_cost.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
