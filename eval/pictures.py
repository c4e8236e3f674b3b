"""Temporal-stability pictures: X–T slices and side-by-side videos, the pictures the paper uses to show flicker.

An **X–T slice** takes one pixel row (``runner.xt_row``, a fraction of the height; 0.5 = the middle row) of every
frame and stacks them over time: x runs left to right, time top to bottom. A temporally stable video gives smooth
streaks (straight for a static scene, slanted where things move); flicker shows as horizontal bands, texture that
"boils" as noise across rows. Per video the run folder gets ``xt/<video>.png``: the input's slice, then each
method's, side by side (``runner.xt_slices``, on by default).

A **side-by-side video** (``runner.side_by_side=true``, off by default) writes ``side_by_side/<video>.mp4``: input |
each method, frames at most ``SBS_HEIGHT`` pixels high, at the video's frame rate.

Both are assembled from small per-unit files kept with the unit (``xt_input.png`` + ``xt.png``; ``sbs_input.mp4`` +
``sbs.mp4``), so a resumed run draws them too. A unit cached before a picture was requested lacks its file: that
method's column is left out with a warning (``runner.resume=false`` recomputes it).

The unit's frame strip (input over output, ``runner.save_strips``: :func:`frame_strip_png`) and the mp4 writer every
video here and ``runner.save_videos`` use (:func:`write_mp4`) live here too.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eval.framefile import FrameFile, chunks

log = logging.getLogger(__name__)

SBS_HEIGHT = 256  # side-by-side frames are scaled down to at most this height
XT_MIN_HEIGHT = 96  # short clips are stretched in time (nearest) so that a slice is at least this tall
GAP = 4  # pixels between columns
# zlib level of the pictures' PNGs: 1 writes them ~4x faster than Pillow's default 6 (X-T slices grow with the clip's
# length and were ~1 ms a frame of the harness's own cost) for files ~20 % larger
PNG_LEVEL = 1


def xt_slice(frames: Tensor | list[Tensor], row: float = 0.5) -> Tensor:
    """``[T, 3, H, W]`` (or a list of ``[3, H, W]``) in [0, 1] -> ``[3, T, W]``: row ``round(row * (H - 1))`` of
    every frame, time downwards."""
    if not 0.0 <= row <= 1.0:
        raise ValueError(f"runner.xt_row must be a fraction of the height in [0, 1], got {row}")
    y = int(round(row * (frames[0].shape[-2] - 1)))
    if isinstance(frames, list | tuple):
        return torch.stack([f[:, y, :] for f in frames], dim=1)
    return frames[:, :, y, :].permute(1, 0, 2).contiguous()


def _uint8(img: Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8."""
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _png(img: Tensor | np.ndarray) -> bytes:
    from PIL import Image

    arr = img if isinstance(img, np.ndarray) else _uint8(img)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def _small(frames: Tensor) -> Tensor:
    h = frames.shape[-2]
    if h <= SBS_HEIGHT:
        return frames
    w = max(2, round(frames.shape[-1] * SBS_HEIGHT / h))
    return F.interpolate(frames, size=(SBS_HEIGHT, w), mode="area")


def _xt_png(frames: Tensor | FrameFile, row: float) -> bytes:
    """The x-t slice of a clip, assembled chunk by chunk (one row of each frame; never the whole clip)."""
    return _png(np.concatenate([_uint8(xt_slice(c, row)) for c in chunks(frames)], axis=0))


def _mp4_bytes(frames: Tensor | FrameFile, fps: float, small: bool = False) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        write_mp4(path, frames, fps, small=small)
        return path.read_bytes()


def unit_files(
    frames: Tensor | FrameFile,
    outputs: Tensor | FrameFile,
    fps: float,
    *,
    xt: bool = True,
    row: float = 0.5,
    side_by_side: bool = False,
) -> dict[str, bytes]:
    """The per-unit files the run-level pictures are assembled from."""
    files: dict[str, bytes] = {}
    if xt:
        if not 0.0 <= row <= 1.0:  # said before any frame is read
            raise ValueError(f"runner.xt_row must be a fraction of the height in [0, 1], got {row}")
        files["xt_input.png"] = _xt_png(frames, row)
        files["xt.png"] = _xt_png(outputs, row)
    if side_by_side:
        files["sbs_input.mp4"] = _mp4_bytes(frames, fps, small=True)
        files["sbs.mp4"] = _mp4_bytes(outputs, fps, small=True)
    return files


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _labelled_row(columns: list[tuple[str, np.ndarray]], stretch: int = 1) -> np.ndarray:
    """Images side by side with a label above each (PIL's built-in font), white background."""
    from PIL import Image, ImageDraw

    cols = [(label, np.repeat(img, stretch, axis=0)) for label, img in columns]
    label_h = 14
    h = max(img.shape[0] for _, img in cols)
    w = sum(img.shape[1] for _, img in cols) + GAP * (len(cols) - 1)
    canvas = Image.new("RGB", (w, h + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, img in cols:
        canvas.paste(Image.fromarray(img), (x, label_h))
        draw.text((x + 1, 1), label[: max(1, img.shape[1] // 6)], fill="black")
        x += img.shape[1] + GAP
    return np.asarray(canvas)


def _decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def write_run_pictures(
    run_dir: Path,
    units: list[tuple[str, str, Path]],
    *,
    xt: bool = True,
    side_by_side: bool = False,
    fps: dict | None = None,
) -> list[Path]:
    """Assemble ``xt/<video>.png`` and ``side_by_side/<video>.mp4`` from the units' files.

    ``units``: (method, video, unit folder) in run order. Returns the files written."""
    by_video: dict[str, list[tuple[str, Path]]] = {}
    for method, video, folder in units:
        by_video.setdefault(video, []).append((method, Path(folder)))
    written: list[Path] = []
    for video, entries in by_video.items():
        if xt:
            written += _xt_figure(run_dir, video, entries)
        if side_by_side:
            written += _sbs_video(run_dir, video, entries, (fps or {}).get(video, 24.0))
    return written


def _missing(kind: str, video: str, methods: list[str]) -> None:
    if methods:
        log.warning(
            "%s for %s: no picture file for %s (units cached before it was requested; runner.resume=false "
            "recomputes them)",
            kind,
            video,
            ", ".join(methods),
        )


def _xt_figure(run_dir: Path, video: str, entries: list[tuple[str, Path]]) -> list[Path]:
    have = [(m, f) for m, f in entries if (f / "xt.png").is_file() and (f / "xt_input.png").is_file()]
    _missing("X-T slice", video, [m for m, f in entries if (m, f) not in have])
    if not have:
        return []
    cols = [("input", _read_png(have[0][1] / "xt_input.png"))]
    cols += [(m, _read_png(f / "xt.png")) for m, f in have]
    t = cols[0][1].shape[0]
    img = _labelled_row(cols, stretch=max(1, -(-XT_MIN_HEIGHT // t)))
    from PIL import Image

    out = Path(run_dir) / "xt" / f"{video}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(out, compress_level=PNG_LEVEL)
    return [out]


def _sbs_video(run_dir: Path, video: str, entries: list[tuple[str, Path]], fps: float) -> list[Path]:
    have = [(m, f) for m, f in entries if (f / "sbs.mp4").is_file() and (f / "sbs_input.mp4").is_file()]
    _missing("side-by-side video", video, [m for m, f in entries if (m, f) not in have])
    if not have:
        return []
    clips = [("input", _decode(have[0][1] / "sbs_input.mp4"))] + [
        (m, _decode(f / "sbs.mp4")) for m, f in have
    ]
    n = min(c.shape[0] for _, c in clips)
    frames = np.stack([_labelled_row([(label, c[i]) for label, c in clips]) for i in range(n)])
    out = Path(run_dir) / "side_by_side" / f"{video}.mp4"
    write_mp4(out, torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, fps)
    return [out]


def frame_strip_png(
    inputs: Tensor, outputs: Tensor | list[Tensor], k: int = 6, max_height: int = 96
) -> bytes:
    """Input frames on top, outputs below, ``k`` evenly spaced frames, as PNG bytes. Each frame is scaled down to
    ``max_height`` first (antialiased bilinear), so the strip costs the same at 64 px and at 512 px."""
    from PIL import Image

    n = inputs.shape[0]
    idx = sorted({round(x) for x in np.linspace(0, n - 1, min(k, n))})
    h, w = inputs.shape[-2:]
    size = (max_height, max(1, int(w * max_height / h))) if h > max_height else (h, w)

    def small(frame: Tensor) -> Tensor:
        frame = frame.clamp(0, 1)
        if size == (h, w):
            return frame
        return F.interpolate(frame[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]

    top = torch.cat([small(inputs[i]) for i in idx], dim=-1)
    bottom = torch.cat([small(outputs[i]) for i in idx], dim=-1)
    grid = torch.cat([top, bottom], dim=-2).clamp_(0, 1)
    img = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def write_mp4(path: Path, frames: Tensor | FrameFile, fps: float, small: bool = False) -> None:
    """Encode ``[T, 3, H, W]`` frames (a tensor or a disk-backed FrameFile, read chunk by chunk) as H.264 (MPEG-4
    part 2 when no H.264 encoder is available); ``small``: scaled down to ``SBS_HEIGHT`` first."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    fh, fw = frames.shape[-2:]
    if small and fh > SBS_HEIGHT:
        fh, fw = SBS_HEIGHT, max(2, round(fw * SBS_HEIGHT / fh))
    h, w = fh - fh % 2, fw - fw % 2
    tmp = path.with_suffix(".tmp.mp4")
    rate = max(1, int(round(fps))) if math.isfinite(fps) else 25
    with av.open(str(tmp), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=rate)
        except Exception:  # noqa: BLE001 - encoder availability depends on the FFmpeg build
            stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for chunk in chunks(frames):
            chunk = _small(chunk) if small else chunk
            arr = (chunk.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            for a in arr:
                for packet in stream.encode(
                    av.VideoFrame.from_ndarray(np.ascontiguousarray(a[:h, :w]), format="rgb24")
                ):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
