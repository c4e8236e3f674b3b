"""Train the project's tiny video diffusion model on the CPU: ``python -m live2diff.train_tiny``.

The command line: parses the options, runs the stages (:mod:`.stages`) and writes the weights file
(:func:`live2diff.components.trained.save_trained`), its record (``.json``) and loss curve (``.png``) beside it."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from live2diff.components.trained import save_trained
from live2diff.train_tiny.figures import plot_curve, write_strip
from live2diff.train_tiny.stages import DEFAULT_MODEL_CFG, Trainer

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "live2diff" / "assets" / "tiny_trained.safetensors"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m live2diff.train_tiny", description=__doc__.split("\n")[0])
    p.add_argument(
        "--out", default=str(DEFAULT_OUT), help="safetensors file to write (a .json and .png beside it)"
    )
    p.add_argument("--model-cfg", default=str(DEFAULT_MODEL_CFG), help="architecture (conf/model/*.yaml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (same value -> same weights)")
    p.add_argument("--size", type=int, default=64, help="frame size (square) of the training clips")
    p.add_argument("--clip-frames", type=int, default=24)
    p.add_argument("--synthetic-clips", type=int, default=160)
    p.add_argument("--video-clips-per-file", type=int, default=40)
    p.add_argument("--davis", default=None, help="optional DAVIS-2017 root (extra data; never shipped)")
    p.add_argument("--davis-clips-per-video", type=int, default=4)
    p.add_argument(
        "--ae-steps",
        type=int,
        default=1000,
        help="decoder steps (vae.kind pixel_taesd; a pixel VAE has none)",
    )
    p.add_argument("--ae-batch", type=int, default=16)
    p.add_argument("--lr-ae", type=float, default=2e-3)
    p.add_argument("--ae-lpips-weight", type=float, default=1.0, help="weight of LPIPS in the decoder's loss")
    p.add_argument(
        "--ae-denoised",
        type=float,
        default=0.5,
        help="share of the decoder's latents that are UNet x0 estimates",
    )
    p.add_argument(
        "--ae-temporal-weight",
        type=float,
        default=2.0,
        help="weight of the decoder's temporal term: L1 between the change of its output and of the input over "
        "neighbouring frames (decoded from independently denoised latents)",
    )
    p.add_argument(
        "--lpips",
        default="weights/lpips_alex.safetensors",
        help="AlexNet-LPIPS weights for the decoder's loss (python -m eval.metrics.convert_lpips_weights)",
    )
    p.add_argument("--image-steps", type=int, default=1200)
    p.add_argument("--image-batch", type=int, default=64)
    p.add_argument("--lr-image", type=float, default=2e-3)
    p.add_argument("--video-steps", type=int, default=500)
    p.add_argument("--video-batch", type=int, default=4)
    p.add_argument("--lr-video", type=float, default=1e-3)
    p.add_argument("--max-frames", type=int, default=16, help="longest training clip (Live2Diff's window)")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument(
        "--depth-prob", type=float, default=0.8, help="share of video batches with depth conditioning"
    )
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument(
        "--strip", default=None, help="only write a PNG strip: input vs each method (model=tiny), no training"
    )
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> tuple[Any, list[dict], dict]:
    """Run both stages; returns ``(components with trained weights, loss history, data description)``."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # an op without a deterministic kernel is an error, not a drift
    try:
        trainer = Trainer(args)
        hist = trainer.train_image(args.log_every)
        hist += trainer.train_decoder(args.log_every)
        hist += trainer.train_video(args.log_every)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    comps = trainer.comps
    for m in comps.modules().values():
        m.eval().requires_grad_(False)
    return comps, hist, trainer.data_desc


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    if args.strip:
        torch.set_num_threads(args.threads)
        write_strip(args.strip)
        log.info("wrote %s", args.strip)
        return 0
    t0 = time.time()
    comps, hist, data = train(args)
    elapsed = time.time() - t0
    out = Path(args.out)
    if Path(args.model_cfg).resolve().is_relative_to(ROOT):
        args.model_cfg = str(Path(args.model_cfg).resolve().relative_to(ROOT))
    given = sys.argv[1:] if argv is None else list(argv)
    cmd = " ".join(["python -m live2diff.train_tiny", *given])
    meta = {
        "command": cmd,
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "strip")},
        "data": data,
        "seconds": round(elapsed, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": args.threads,
        "loss": {
            stage: {"first": rows[0]["loss"], "last": rows[-1]["loss"]}
            for stage in ("image", "decoder", "video")
            if (rows := [h for h in hist if h["stage"] == stage])
        },
    }
    if any(h["stage"] == "decoder" for h in hist) and args.ae_lpips_weight > 0:
        meta["lpips_weights_sha256"] = hashlib.sha256(Path(args.lpips).read_bytes()).hexdigest()
    # the file's own metadata leaves out the command (it names --out): the same run gives the same bytes anywhere
    save_trained(comps, out, {k: meta[k] for k in ("args", "data")})
    meta["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    meta["history"] = hist
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    plot_curve(hist, out.with_suffix(".png"))
    log.info("wrote %s (%.1f MB) in %.0fs", out, out.stat().st_size / 1e6, elapsed)
    return 0
