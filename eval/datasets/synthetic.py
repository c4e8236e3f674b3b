"""Procedural clips with known ground-truth motion.

Each clip is a stack of layers — a textured background and a few textured shapes (disks and rectangles) — each
moving by its own rigid motion (translation + rotation about its centre). Textures are continuous functions of
texture coordinates (sums of sinusoids), so a frame is an exact sample of the scene and the flow is analytic:
for a pixel ``p`` of frame ``t`` covered by layer ``L``, its texture coordinate is ``u = A_t^-1(p)`` and it was at
``A_{t-1}(u)`` in frame ``t-1``. That gives the **backward flow** ``flow[t](p) = A_{t-1}(A_t^-1(p)) - p`` and the
occlusion mask (``True`` where that point was hidden by another layer or outside the frame at ``t-1``).

Convention (used by the metrics too): sampling frame ``t-1`` at ``p + flow[t](p)`` reproduces frame ``t`` away
from occlusions. ``flow[0]`` is zero and ``occlusion[0]`` is all ``False``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from eval.datasets.base import Video, VideoDataset, fingerprint


@dataclass
class SyntheticClip:
    frames: Tensor  # float32 [T, 3, H, W] in [0, 1]
    flow: Tensor  # float32 [T, 2, H, W], backward flow t -> t-1 in pixels (x, y)
    occlusion: Tensor  # bool [T, H, W]
    fps: float


@dataclass
class _Layer:
    shape: str  # "background" | "disk" | "rect"
    size: tuple[float, float]  # radius (disk) or half extents (rect), in pixels
    centre0: np.ndarray  # position of the layer's origin at t = 0
    velocity: np.ndarray  # pixels / frame
    angle0: float
    spin: float  # radians / frame
    freqs: np.ndarray  # [K, 2] spatial frequencies (cycles / pixel)
    phases: np.ndarray  # [K, 3] per-channel phases
    base: np.ndarray  # [3] base colour
    amp: float

    def pose(self, t: int) -> tuple[np.ndarray, float]:
        return self.centre0 + self.velocity * t, self.angle0 + self.spin * t

    def to_texture(self, x: np.ndarray, y: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Inverse rigid transform: image coordinates at time t -> texture coordinates."""
        c, a = self.pose(t)
        dx, dy = x - c[0], y - c[1]
        ca, sa = math.cos(-a), math.sin(-a)
        return ca * dx - sa * dy, sa * dx + ca * dy

    def to_image(self, u: np.ndarray, v: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        c, a = self.pose(t)
        ca, sa = math.cos(a), math.sin(a)
        return ca * u - sa * v + c[0], sa * u + ca * v + c[1]

    def inside(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        if self.shape == "background":
            return np.ones(u.shape, dtype=bool)
        if self.shape == "disk":
            return u * u + v * v <= self.size[0] ** 2
        return (np.abs(u) <= self.size[0]) & (np.abs(v) <= self.size[1])

    def colour(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.empty((3, *u.shape), dtype=np.float64)
        for ch in range(3):
            acc = np.zeros(u.shape, dtype=np.float64)
            for (fx, fy), ph in zip(self.freqs, self.phases[:, ch]):
                acc += np.sin(2 * math.pi * (fx * u + fy * v) + ph)
            out[ch] = self.base[ch] + self.amp * acc / len(self.freqs)
        return np.clip(out, 0.0, 1.0)


def _make_layers(
    rng: np.random.Generator, height: int, width: int, num_objects: int, max_speed: float, rotation: bool
) -> list[_Layer]:
    def texture(n: int, max_freq: float) -> tuple[np.ndarray, np.ndarray]:
        freqs = rng.uniform(-max_freq, max_freq, size=(n, 2))
        return freqs, rng.uniform(0, 2 * math.pi, size=(n, 3))

    scale = min(height, width)
    freqs, phases = texture(6, 4.0 / scale)
    layers = [
        _Layer(
            "background",
            (0.0, 0.0),
            np.array([width / 2, height / 2]),
            rng.uniform(-0.5, 0.5, 2) * max_speed,
            0.0,
            0.0,
            freqs,
            phases,
            rng.uniform(0.3, 0.7, 3),
            0.25,
        )
    ]
    for i in range(num_objects):
        shape = "disk" if i % 2 == 0 else "rect"
        size = (rng.uniform(0.10, 0.22) * scale, rng.uniform(0.08, 0.18) * scale)
        freqs, phases = texture(4, 6.0 / scale)
        speed = rng.uniform(0.3, 1.0) * max_speed
        direction = rng.uniform(0, 2 * math.pi)
        layers.append(
            _Layer(
                shape,
                size,
                rng.uniform([0.25 * width, 0.25 * height], [0.75 * width, 0.75 * height]),
                speed * np.array([math.cos(direction), math.sin(direction)]),
                rng.uniform(0, 2 * math.pi),
                rng.uniform(-0.05, 0.05) if rotation else 0.0,
                freqs,
                phases,
                rng.uniform(0.1, 0.9, 3),
                0.3,
            )
        )
    return layers


def _owner(layers: list[_Layer], x: np.ndarray, y: np.ndarray, t: int) -> np.ndarray:
    """Index of the topmost layer covering each pixel at time t."""
    owner = np.zeros(x.shape, dtype=np.int64)
    for i, layer in enumerate(layers[1:], start=1):
        u, v = layer.to_texture(x, y, t)
        owner[layer.inside(u, v)] = i
    return owner


def generate_clip(
    num_frames: int = 24,
    height: int = 64,
    width: int = 64,
    seed: int = 0,
    *,
    num_objects: int = 3,
    max_speed: float = 2.0,
    rotation: bool = True,
    fps: float = 12.0,
) -> SyntheticClip:
    """Render a clip and its exact backward flow / occlusion masks (see module docstring)."""
    if num_frames < 1 or height < 2 or width < 2:
        raise ValueError(
            f"need num_frames >= 1 and a frame of at least 2x2, got {num_frames}x{height}x{width}"
        )
    rng = np.random.default_rng(seed)
    layers = _make_layers(rng, height, width, num_objects, max_speed, rotation)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = np.zeros((num_frames, 3, height, width), dtype=np.float32)
    flow = np.zeros((num_frames, 2, height, width), dtype=np.float32)
    occlusion = np.zeros((num_frames, height, width), dtype=bool)
    prev_owner = None
    for t in range(num_frames):
        owner = _owner(layers, x, y, t)
        for i, layer in enumerate(layers):
            sel = owner == i
            if not sel.any():
                continue
            u, v = layer.to_texture(x[sel], y[sel], t)
            frames[t][:, sel] = layer.colour(u, v)
            if t > 0:
                px, py = layer.to_image(u, v, t - 1)
                flow[t, 0][sel] = px - x[sel]
                flow[t, 1][sel] = py - y[sel]
        if t > 0:
            px, py = x + flow[t, 0], y + flow[t, 1]
            outside = (px < 0) | (px > width - 1) | (py < 0) | (py > height - 1)
            # visible at t-1 only if the same layer owned the landing point and all four bilinear neighbours
            x0 = np.clip(np.floor(px), 0, width - 1).astype(np.int64)
            y0 = np.clip(np.floor(py), 0, height - 1).astype(np.int64)
            x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
            hidden = _owner(layers, px, py, t - 1) != owner
            for yi, xi in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)):
                hidden |= prev_owner[yi, xi] != owner
            occlusion[t] = outside | hidden
        prev_owner = owner
    return SyntheticClip(torch.from_numpy(frames), torch.from_numpy(flow), torch.from_numpy(occlusion), fps)


def render_frames(
    num_frames: int = 24,
    height: int = 64,
    width: int = 64,
    seed: int = 0,
    *,
    num_objects: int = 3,
    max_speed: float = 2.0,
    rotation: bool = True,
    fps: float = 12.0,
) -> Iterator[Tensor]:
    """The frames of :func:`generate_clip` (the same values), one ``[3, H, W]`` at a time, without the flow and
    occlusion masks: a long clip is rendered without ever being whole in memory."""
    if num_frames < 1 or height < 2 or width < 2:
        raise ValueError(
            f"need num_frames >= 1 and a frame of at least 2x2, got {num_frames}x{height}x{width}"
        )
    rng = np.random.default_rng(seed)
    layers = _make_layers(rng, height, width, num_objects, max_speed, rotation)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    for t in range(num_frames):
        frame = np.zeros((3, height, width), dtype=np.float32)
        owner = _owner(layers, x, y, t)
        for i, layer in enumerate(layers):
            sel = owner == i
            if sel.any():
                frame[:, sel] = layer.colour(*layer.to_texture(x[sel], y[sel], t))
        yield torch.from_numpy(frame)


def warp_backward(prev: Tensor, flow: Tensor) -> Tensor:
    """Sample ``prev`` ``[N, C, H, W]`` at ``p + flow(p)`` (bilinear, border padding): frame t-1 -> frame t."""
    n, _, h, w = prev.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flow.dtype), torch.arange(w, dtype=flow.dtype), indexing="ij"
    )
    gx = (xs + flow[:, 0]) / max(w - 1, 1) * 2 - 1
    gy = (ys + flow[:, 1]) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)
    return torch.nn.functional.grid_sample(
        prev, grid, mode="bilinear", padding_mode="border", align_corners=True
    )


class SyntheticDataset(VideoDataset):
    """``num_videos`` procedural clips (see :func:`generate_clip`); needs no files. Prompts cycle through
    ``prompt_list``. A video's ground truth (flow, occlusion) is ``video.meta['ground_truth']()`` (regenerated on
    request: holding every loaded clip made a long run's memory grow by ~0.8 MB per video)."""

    name = "synthetic"

    def __init__(
        self,
        num_videos: int = 3,
        num_frames: int = 24,
        height: int = 64,
        width: int = 64,
        fps: float = 12.0,
        seed: int = 0,
        num_objects: int = 3,
        max_speed: float = 2.0,
        prompt_list: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if height % 8 or width % 8:
            raise ValueError(f"dataset.height/width must be multiples of 8, got {height}x{width}")
        self.params = dict(
            num_frames=num_frames,
            height=height,
            width=width,
            fps=fps,
            num_objects=num_objects,
            max_speed=max_speed,
        )
        self.num_videos, self.seed = num_videos, seed
        self.prompt_list = list(prompt_list or ["a watercolor painting"])

    def list_videos(self) -> list[Video]:
        out = []
        for i in range(self.num_videos):
            seed = self.seed + i
            meta: dict = {"seed": seed, "ground_truth": partial(generate_clip, seed=seed, **self.params)}

            def load(seed=seed):
                clip = generate_clip(seed=seed, **self.params)
                return self.transform.spatial(clip.frames[self._kept(clip.frames.shape[0])])

            def stream(seed=seed):
                kept = set(self._kept(self.params["num_frames"]))
                for t, frame in enumerate(render_frames(seed=seed, **self.params)):
                    if t in kept:
                        yield self.transform.spatial(frame[None])[0]

            out.append(
                Video(
                    f"synthetic_{i:03d}",
                    self.prompt_list[i % len(self.prompt_list)],
                    self.params["fps"],
                    fingerprint("synthetic-v1", seed, self.params, self.transform.describe()),
                    load,
                    meta,
                    stream=stream,
                    num_frames=len(self._kept(self.params["num_frames"])),
                )
            )
        return out

    def _kept(self, n: int) -> list[int]:
        kept: list[int] = []
        for i in range(n):
            if self.transform.done(len(kept)):
                break
            if self.transform.keeps(i, len(kept)):
                kept.append(i)
        return kept

    def describe(self) -> dict:
        return {**super().describe(), **self.params, "num_videos": self.num_videos, "seed": self.seed}
