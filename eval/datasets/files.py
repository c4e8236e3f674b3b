"""Decoding video files (PyAV) and frame folders (Pillow) into frame tensors, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from eval.datasets.base import FrameTransform, VideoReadError, uint8_to_frames

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def probe_fps(path: Path, default: float = 25.0) -> float:
    """Average frame rate from the container header; ``default`` when it is missing or unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else default
    except Exception:  # noqa: BLE001 - unreadable files are reported when decoded
        return default


def read_video_file(path: Path, transform: FrameTransform) -> Tensor:
    """Decode the frames ``transform`` keeps; stops early once ``max_frames`` are in hand."""
    import av

    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    kept: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            for i, frame in enumerate(container.decode(video=0)):
                if transform.done(len(kept)):
                    break
                if transform.keeps(i, len(kept)):
                    kept.append(frame.to_ndarray(format="rgb24"))
    except VideoReadError:
        raise
    except Exception as exc:  # PyAV raises many error types for corrupt data
        raise VideoReadError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc
    if not kept:
        raise VideoReadError(f"{path}: no decodable frames")
    return transform.spatial(uint8_to_frames(np.stack(kept)))


def list_frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def read_frame_folder(folder: Path, transform: FrameTransform) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    files = list_frame_files(folder) if folder.is_dir() else []
    if not files:
        raise VideoReadError(f"{folder}: no frames ({'/'.join(IMAGE_EXTENSIONS)}) in folder")
    frames: list[Tensor] = []
    size = None
    for i, f in enumerate(files):
        if transform.done(len(frames)):
            break
        if not transform.keeps(i, len(frames)):
            continue
        try:
            with Image.open(f) as img:
                if img.mode not in ("RGB", "L", "RGBA", "P"):
                    raise VideoReadError(f"{f}: unsupported image mode {img.mode}")
                arr = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise VideoReadError(f"{f}: cannot read image ({exc})") from exc
        if size is not None and arr.shape != size:
            raise VideoReadError(f"{f}: frame size {arr.shape[:2]} differs from the first frame's {size[:2]}")
        size = arr.shape
        frames.append(torch.from_numpy(arr.copy()))
    if not frames:
        raise VideoReadError(f"{folder}: no frames kept (check dataset.start / stride)")
    return transform.spatial(uint8_to_frames(torch.stack(frames).numpy()))
