"""GPU smoke test: every diffusion method on ``model=sd15`` (random weights), fp16, CUDA, 512², 30 frames.

For each method: outputs finite, throughput FPS, end-to-end latency p50/p95 and peak CUDA memory, in one table —
through the harness's own stream driver (``eval.timing.run_stream``, the one definition of latency). A method that
fails (out of memory, an error) gets its reason in the table and the script goes on; the exit status is 1 when any
method failed or produced a non-finite frame.

    python benchmarks/gpu_smoke.py                                  # the GPU run: sd15, cuda, float16, 512, 30
    python benchmarks/gpu_smoke.py --model tiny --device cpu --dtype float32 --size 64 --frames 10 --out /tmp/s

Writes <out>.json and <out>.md (default benchmarks/results/gpu_smoke).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METHODS = [
    "live2diff",
    "live2diff_window",
    "live2diff_nowarmup",
    "live2diff_nodepth",
    "streamdiffusion",
    "streamv2v",
    "per_frame_img2img",
    "animatediff_window",
]


def frames_for(n: int, size: int):
    """A smooth moving pattern, ``[n, 3, size, size]`` in [0, 1] (content is irrelevant with random weights)."""
    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(
        torch.rand(1, 3, size // 8, size // 8, generator=g), size=(size, size)
    )[0]
    return torch.stack([torch.roll(base, shifts=(2 * i, 3 * i), dims=(1, 2)) for i in range(n)])


def run_method(name: str, args) -> dict:
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from eval.timing import run_stream, summarise

    overrides = [
        f"method=[{name}]",
        f"model={args.model}",
        f"hardware={'cuda' if args.device == 'cuda' else 'cpu'}",
    ]
    overrides += [f"hardware.device={args.device}", f"hardware.dtype={args.dtype}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    row: dict = {"method": name}
    method = None
    try:
        t0 = time.perf_counter()
        method = instantiate(cfg.method[name], _convert_="all")
        row["build_s"] = time.perf_counter() - t0
        frames = frames_for(args.frames, args.size)
        method.prepare("a watercolor painting of a city street", height=args.size, width=args.size, seed=42)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            rec = run_stream(method, frames)
        _, video = summarise(rec)
        out = torch.stack(rec.outputs)
        row.update(
            finite=bool(torch.isfinite(out).all()),
            fps=video["fps"],
            latency_p50_ms=video["latency_p50_ms"],
            latency_p95_ms=video["latency_p95_ms"],
            first_frame_latency_ms=video["first_frame_latency_ms"],
            peak_mem_mb=video["peak_mem_mb"],
            status="ok",
        )
    except Exception as e:  # noqa: BLE001 - one failing method must not hide the others' figures
        row.update(status=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}", finite=False)
        traceback.print_exc()
    finally:
        if method is not None and hasattr(method, "reset"):
            method.reset()
        del method
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    def f(v, nd=1):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"

    lines = [
        f"# GPU smoke: model={meta['model']} (random weights), {meta['dtype']}, {meta['device']} "
        f"({meta.get('device_name', '?')}), {meta['size']}², {meta['frames']} frames",
        "",
        f"Command: `{meta['command']}`. Latency: push of frame i to its emission (eval.timing); FPS: frames / "
        "(last emission − first push); peak memory: torch.cuda.max_memory_allocated (process RSS on CPU).",
        "",
        "| method | finite | FPS | latency p50 (ms) | latency p95 (ms) | first frame (ms) | peak mem (MiB) | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {'yes' if r.get('finite') else 'NO'} | {f(r.get('fps'), 2)} | "
            f"{f(r.get('latency_p50_ms'))} | {f(r.get('latency_p95_ms'))} | {f(r.get('first_frame_latency_ms'))} | "
            f"{f(r.get('peak_mem_mb'), 0)} | {r['status']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--methods", nargs="*", default=METHODS)
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu_smoke")
    add_smoke_flag(ap)
    small = dict(model="tiny", device="cpu", dtype="float32", size=64, frames=10, methods=["identity", "live2diff"])
    args = apply_smoke(ap, ap.parse_args(argv), small)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "no CUDA device: run with --device cpu (and a small --model/--size) to check the script",
            file=sys.stderr,
        )
        return 2
    meta = {k: getattr(args, k) for k in ("model", "device", "dtype", "size", "frames")}
    meta["command"] = "python benchmarks/gpu_smoke.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta["torch"] = torch.__version__
    if args.device == "cuda":
        meta["device_name"] = torch.cuda.get_device_name()
    rows = []
    for name in args.methods:
        rows.append(run_method(name, args))
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = markdown(rows, meta)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0 if all(r["status"] == "ok" and r.get("finite") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
