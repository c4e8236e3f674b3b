"""Frames per second of each quality metric at 512x512 on this machine (CPU by default).

    python benchmarks/metrics_throughput.py [--frames 8] [--repeats 3] [--device cpu] [--out benchmarks/results]

Each metric scores one video of ``--frames`` frames in a single ``update`` (after one warm-up call); the figure is
frames / median wall time over ``--repeats``. Speed does not depend on the weights' values, so architectures that
need weight files (RAFT, ViT-B-32 CLIP, LPIPS AlexNet) are timed with random-init weights of the real shapes.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

from eval.datasets.synthetic import generate_clip  # noqa: E402
from eval.metrics.clip import ClipConsistency, ClipScore, _build  # noqa: E402
from eval.metrics.frame_diff import MeanAbsFrameDiff  # noqa: E402
from eval.metrics.warp_error import WarpError  # noqa: E402

log = logging.getLogger("metrics_throughput")


def random_weight_files(tmp: Path) -> dict[str, Path]:
    from safetensors.torch import save_file
    from torchvision.models.optical_flow import raft_large, raft_small

    from eval.metrics.convert_lpips_weights import TRUNK_KEYS

    files = {}
    for name, build in (("raft_small", raft_small), ("raft_large", raft_large)):
        files[name] = tmp / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in build(weights=None).state_dict().items()}, str(files[name]))
    shapes = [(64, 3, 11, 11), (192, 64, 5, 5), (384, 192, 3, 3), (256, 384, 3, 3), (256, 256, 3, 3)]
    sd = {f"{k}.weight": torch.randn(*s) * 0.01 for k, s in zip(TRUNK_KEYS, shapes)}
    sd |= {f"{k}.bias": torch.zeros(s[0]) for k, s in zip(TRUNK_KEYS, shapes)}
    sd |= {f"lin{i}.model.1.weight": torch.rand(1, s[0], 1, 1) for i, s in enumerate(shapes)}
    files["lpips"] = tmp / "lpips.safetensors"
    save_file(sd, str(files["lpips"]))
    return files


def vit_b32_random(device: str):
    """ViT-B-32 with random weights (same compute as the real model), injected into the shared CLIP cache."""
    from eval.metrics import clip as clip_mod

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        import open_clip

        model = open_clip.create_model("ViT-B-32", pretrained=None, device=device).eval()
    base = _build("ViT-B-32", None, device)
    size = model.visual.image_size
    cm = clip_mod.ClipModel(
        model,
        base.tokenizer,
        (size, size) if isinstance(size, int) else tuple(size),
        base.mean,
        base.std,
        comparable=False,
        label="ViT-B-32 (random init, timing only)",
        device=device,
    )
    clip_mod._CACHE[("vitb32-timing", None, device)] = cm
    return cm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--raft-frames", type=int, default=3, help="RAFT is slow on CPU: fewer frames, one repeat"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add_smoke_flag(ap)
    args = apply_smoke(ap, ap.parse_args(), dict(frames=2, size=64, repeats=1, raft_frames=2))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)

    clip = generate_clip(args.frames, args.size, args.size, seed=0)
    output = (clip.frames + 0.02 * torch.randn_like(clip.frames)).clamp(0, 1)
    tmp = Path(tempfile.mkdtemp())
    files = random_weight_files(tmp)
    from eval.metrics.lpips_metric import LPIPS

    d = args.device
    metrics = {
        "frame_diff": lambda: MeanAbsFrameDiff(),
        "warp_error (DIS ultrafast)": lambda: WarpError(flow="dis", dis_preset="ultrafast"),
        "warp_error (DIS fast)": lambda: WarpError(flow="dis", dis_preset="fast"),
        "warp_error (DIS medium, default)": lambda: WarpError(flow="dis", dis_preset="medium"),
        "warp_error (Farneback)": lambda: WarpError(flow="farneback"),
        "warp_error (streamv2v_compat, DIS medium)": lambda: WarpError(
            flow="dis", variant="streamv2v_compat"
        ),
        "warp_error (RAFT-small, 12 iters)": lambda: WarpError(
            flow="raft", raft_model="small", raft_weights=str(files["raft_small"]), device=d
        ),
        "warp_error (RAFT-large, 12 iters)": lambda: WarpError(
            flow="raft", raft_model="large", raft_weights=str(files["raft_large"]), device=d
        ),
        "clip_score (tiny random CLIP)": lambda: ClipScore(device=d),
        "clip_consistency (tiny random CLIP)": lambda: ClipConsistency(device=d),
        "clip_score (ViT-B-32 shapes)": lambda: _with_clip(ClipScore(device=d), vit_b32_random(d)),
        "clip_consistency (ViT-B-32 shapes)": lambda: _with_clip(
            ClipConsistency(device=d), vit_b32_random(d)
        ),
        "lpips (AlexNet)": lambda: LPIPS(weights=str(files["lpips"]), device=d),
    }
    results = []
    for name, make in metrics.items():
        m = make()
        slow = "RAFT" in name
        n, repeats = (args.raft_frames, 1) if slow else (args.frames, args.repeats)
        m.update(output[:2], clip.frames[:2], prompt="a painting")  # warm-up
        times = []
        for _ in range(repeats):
            m.reset()
            t = time.perf_counter()
            m.update(output[:n], clip.frames[:n], prompt="a painting")
            m.compute()
            times.append(time.perf_counter() - t)
        fps = n / statistics.median(times)
        results.append(
            {"metric": name, "fps": fps, "ms_per_frame": 1000 / fps, "frames": n, "repeats": repeats}
        )
        log.info("%-45s %8.2f frames/s  (%.1f ms/frame)", name, fps, 1000 / fps)

    env = {
        "device": d,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "frames": args.frames,
        "size": args.size,
        "repeats": args.repeats,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics_throughput.json").write_text(
        json.dumps({"env": env, "results": results}, indent=1) + "\n"
    )
    lines = [
        "# Metric throughput",
        "",
        f"`python benchmarks/metrics_throughput.py` — {env['date']}, {args.size}x{args.size}, one video of "
        f"{args.frames} frames per update, median of {args.repeats}; device {d}, torch {env['torch']} with "
        f"{env['torch_threads']} threads. Pairwise metrics score frames 1..T-1 (plus one extra flow per pair "
        "for the occlusion check). Random-init weights of the real shapes (speed does not depend on values).",
        "",
        "| metric | frames/s | ms/frame |",
        "|---|---:|---:|",
    ]  # noqa: E501
    lines += [f"| {r['metric']} | {r['fps']:.3g} | {r['ms_per_frame']:.0f} |" for r in results]
    lines += [
        "",
        f"RAFT rows: {args.raft_frames} frames, one timed run. Machine load average at the end: "
        f"{' '.join(f'{x:.1f}' for x in _loadavg())} (shared CPU: figures are noisy).",
    ]
    (args.out / "metrics_throughput.md").write_text("\n".join(lines) + "\n")
    return 0


def _loadavg() -> tuple[float, ...]:
    try:
        import os

        return os.getloadavg()
    except OSError:
        return ()


def _with_clip(metric, cm):
    metric.clip = cm
    return metric


if __name__ == "__main__":
    raise SystemExit(main())
