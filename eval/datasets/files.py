"""Decoding video files (PyAV) and frame folders (Pillow) into frame tensors, with clear errors."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from eval.datasets.base import (
    FrameTransform,
    VideoReadError,
    shown,
    uint8_frames_to_float,
    uint8_to_frames,
)

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def probe_fps(path: Path, default: float = 25.0) -> float:
    """Average frame rate from the container header; ``default`` when it is missing or unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else default
    except Exception:  # noqa: BLE001 - unreadable files are reported when decoded
        return default


def probe_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` of a video file or of a frame folder's first frame from headers; None when unknown."""
    try:
        if path.is_dir():
            from PIL import Image

            files = list_frame_files(path)
            if not files:
                return None
            with Image.open(files[0]) as img:
                return img.height, img.width
        import av

        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            return (int(ctx.height), int(ctx.width)) if ctx.height and ctx.width else None
    except Exception:  # noqa: BLE001 - unreadable files are reported when decoded
        return None


def expected_frames(declared: int, transform: FrameTransform) -> int:
    """How many frames ``transform`` keeps from a stream of ``declared`` frames."""
    n = max(0, -(-(declared - transform.start) // transform.stride)) if declared > transform.start else 0
    return min(n, transform.max_frames) if transform.max_frames is not None else n


def _note_source(
    info: dict | None,
    path: Path,
    declared: int,
    decoded: int,
    transform: FrameTransform,
    notes: list[str],
    size: tuple[int, int] | None = None,
) -> None:
    """Record declared vs decoded (kept) frames and any conversion in ``info`` (the video's meta), and warn.
    ``size``: the source's ``(height, width)``, for the note on an upscale."""
    if info is None:
        info = {}
    notes = list(dict.fromkeys(notes))
    if size is not None and (up := transform.upscale(*size)):
        notes.append(
            f"upscaled x{up:.2f}: the source is {size[0]}x{size[1]} px, smaller than dataset.size="
            f"{list(transform.size)} (the detail at that size is interpolated, not the source's)"
        )
    want = expected_frames(declared, transform) if declared > 0 else None
    if want is not None and decoded < want:
        notes.append(f"decoded {decoded} of the {want} frames the file's index declares ({declared} in all)")
    info.update(
        {
            "declared_frames": int(declared),
            "expected_frames": want,
            "decoded_frames": int(decoded),
            "notes": notes,
        }
    )
    for n in notes:
        log.warning("%s: %s", shown(path), shown(n))


def _video_pixel_format(frame) -> tuple[int, bool]:
    """(bits per component, has alpha) of a decoded PyAV frame."""
    comps = list(frame.format.components)
    bits = max((int(c.bits) for c in comps), default=8)
    return bits, any(c.is_alpha for c in comps)


def read_video_file(path: Path, transform: FrameTransform, info: dict | None = None) -> Tensor:
    """Decode the frames ``transform`` keeps; stops early once ``max_frames`` are in hand.

    8-bit frames are fitted to the output size as they are decoded (:meth:`FrameTransform.fit_uint8`: resized in
    8 bits, no full-size float copy). Sources deeper than 8 bits are decoded at 16 bits (no precision lost before
    the float conversion); an alpha channel is dropped. Both, and a file that decodes fewer frames than its index
    declares, are noted in ``info`` (the unit's row carries them) and logged.
    """
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    frames = _read_video_file(path, transform, info, fit=True)
    return frames if frames is not None else _read_video_file(path, transform, info, fit=False)


def _read_video_file(path: Path, transform: FrameTransform, info: dict | None, fit: bool) -> Tensor | None:
    """``fit``: 8-bit frames fitted as decoded; None when a deeper frame turns up (then read again unfitted)."""
    import av

    kept: list = []  # fitted: [3, H, W] uint8 tensors; else [H, W, 3] arrays
    notes: list[str] = []
    declared = 0
    decoded = 0
    pts: list[int | None] = []
    size = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = container.streams.video[0]
            declared = int(stream.frames or 0)
            clock = (stream.time_base, stream.average_rate)  # read while the container is open
            for i, frame in enumerate(container.decode(video=0)):
                decoded = i + 1
                if transform.done(len(kept)):
                    break
                pts.append(frame.pts)
                size = size or (int(frame.height), int(frame.width))
                if transform.keeps(i, len(kept)):
                    bits, alpha = _video_pixel_format(frame)
                    if alpha:
                        notes.append(f"alpha channel dropped ({frame.format.name})")
                    if bits > 8:
                        if fit:
                            return None
                        notes.append(f"{bits}-bit source ({frame.format.name}) decoded at 16 bits")
                        kept.append(frame.to_ndarray(format="rgb48le"))
                    elif fit:
                        kept.append(transform.fit_uint8(frame.to_ndarray(format="rgb24")))
                    else:
                        kept.append(frame.to_ndarray(format="rgb24"))
    except VideoReadError:
        raise
    except Exception as exc:  # PyAV raises many error types for corrupt data
        if not kept:
            raise VideoReadError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc
        notes.append(f"decoding stopped at frame {decoded} ({type(exc).__name__}: {exc})")
    if kept:
        notes += frame_rate_notes(pts, *clock)
    _note_source(info, path, declared, len(kept), transform, notes, size)
    if not kept:
        raise VideoReadError(f"{path}: no decodable frames")
    return uint8_frames_to_float(kept) if fit else transform.spatial(to_frames(kept))


def to_frames(arrays: list[np.ndarray]) -> Tensor:
    """``[H, W, 3]`` uint8 or uint16 arrays -> float32 ``[T, 3, H, W]`` in ``[0, 1]`` (16 bits kept)."""
    if all(a.dtype == np.uint8 for a in arrays):
        return uint8_to_frames(np.stack(arrays))
    scaled = [a.astype(np.float32) / (65535.0 if a.dtype == np.uint16 else 255.0) for a in arrays]
    return torch.from_numpy(np.stack(scaled)).permute(0, 3, 1, 2).contiguous()


def frame_rate_notes(pts: list[int | None], time_base, average_rate) -> list[str]:
    """A note when the decoded frames' timestamps are not evenly spaced (a variable-frame-rate file): the stream
    is played one frame per step, at its average rate. Spacing that differs by one tick of the time base (33/34 ms
    at 30 fps in a millisecond base) or by less than 10 % is rounding, not a variable rate."""
    if len(pts) < 3 or any(p is None for p in pts) or not time_base:
        return []
    steps = [b - a for a, b in zip(pts, pts[1:])]
    lo, hi = min(steps), max(steps)
    median = sorted(steps)[len(steps) // 2]
    if hi - lo <= 1 or median <= 0 or hi - lo <= 0.1 * median:
        return []
    ms = float(time_base) * 1000
    rate = f"{float(average_rate):.3g} fps" if average_rate else "its average rate"
    return [
        f"variable frame rate: frame intervals {lo * ms:.1f}-{hi * ms:.1f} ms; read as a constant-rate stream "
        f"at its average rate ({rate}), one frame per step"
    ]


def _natural(p: Path) -> list:
    """Sort key: numbers in a name compare as numbers (``2.png`` before ``10.png``), the rest as text."""
    parts = re.split(r"(\d+)", p.name)
    return [int(t) if i % 2 else t for i, t in enumerate(parts)] + [p.name]


def list_frame_files(folder: Path) -> list[Path]:
    """A folder's frames in playing order: numbered names in numeric order, so unpadded numbering (1, 2, ..., 10)
    plays as numbered instead of 1, 10, 2."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural)


def numbering_gaps(files: list[Path]) -> str | None:
    """A note when a frame folder's numbered names skip numbers (00000, 00002, ...): its frames are played one
    after another, so a missing number is a missing moment played as if none were missing."""
    found = [re.fullmatch(r"(.*?)(\d+)", p.stem) for p in files]
    if len(files) < 2 or not all(found) or len({m.group(1) for m in found}) != 1:
        return None
    nums = sorted({int(m.group(2)) for m in found})
    missing = nums[-1] - nums[0] + 1 - len(nums)
    if missing <= 0:
        return None
    have = set(nums)
    first = next(n for n in range(nums[0], nums[-1]) if n not in have)
    width = len(found[0].group(2))
    return (
        f"frame numbering has gaps: {len(nums)} frames numbered {nums[0]:0{width}d}-{nums[-1]:0{width}d}, "
        f"{missing} number(s) missing (the first: {first:0{width}d}); the frames present are played one after "
        "another, at dataset.fps"
    )


def _read_image(
    f: Path, notes: list[str], transform: FrameTransform | None = None
) -> tuple[np.ndarray | Tensor | None, tuple[int, int]]:
    """One frame as ``[H, W, 3]`` uint8 or (16-bit sources) uint16, and its size in the file ``(height, width)``;
    alpha dropped and noted.

    With ``transform``, an 8-bit frame comes back already fitted to the output size as a ``[3, H', W']`` uint8
    tensor (:meth:`FrameTransform.fit_uint8`; a JPEG much larger than the output is decoded at a reduced scale
    first, ``Image.draft``), and a deeper one as None (the caller reads the folder again without fitting)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as img:
            size = (img.height, img.width)
            raw = img.tile[0][3] if img.tile and len(img.tile[0]) > 3 else ""
            raw = raw if isinstance(raw, str) else (raw[0] if raw else "")
            deep = img.mode in ("I;16", "I;16B", "I;16L", "I") or "16" in str(raw)
            if "A" in img.mode or (img.mode == "P" and "transparency" in img.info):
                notes.append(f"alpha channel dropped ({img.mode} frames)")
            if deep:
                return (None if transform is not None else _read_deep(f, img, notes)), size
            if img.mode not in ("RGB", "L", "RGBA", "P", "LA", "PA", "CMYK", "YCbCr", "1"):
                raise VideoReadError(f"{f}: unsupported image mode {img.mode}")
            if transform is None:
                return np.asarray(img.convert("RGB")).copy(), size
            if img.format == "JPEG" and (draft := transform.draft_size(img.height, img.width)):
                img.draft("RGB", draft)  # (not `size`: that is the frame's size in the file, returned below)
            return transform.fit_uint8(np.asarray(img if img.mode == "RGB" else img.convert("RGB"))), size
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoReadError(f"{f}: cannot read image ({exc})") from exc


def _read_deep(f: Path, img, notes: list[str]) -> np.ndarray:
    """16-bit images: Pillow would clip or truncate them to 8 bits, OpenCV reads every bit."""
    import cv2

    arr = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise VideoReadError(f"{f}: cannot read 16-bit image")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    else:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if arr.dtype == np.uint16:
        notes.append("16-bit frames read at 16 bits")
    elif arr.dtype != np.uint8:
        raise VideoReadError(f"{f}: unsupported sample type {arr.dtype} ({img.mode})")
    return np.ascontiguousarray(arr)


def read_frame_folder(folder: Path, transform: FrameTransform, info: dict | None = None) -> Tensor:
    """The kept frames of a folder. 8-bit frames are fitted to the output size one by one as they are decoded
    (uint8 until the conversion to float at the output size); a folder
    with a frame deeper than 8 bits is read again at full size and precision, then fitted in float."""
    files = list_frame_files(folder) if folder.is_dir() else []
    if not files:
        raise VideoReadError(f"{folder}: no frames ({'/'.join(IMAGE_EXTENSIONS)}) in folder")
    fitted = _read_frames(folder, files, transform, info, fit=True)
    return fitted if fitted is not None else _read_frames(folder, files, transform, info, fit=False)


def _read_frames(
    folder: Path, files: list[Path], transform: FrameTransform, info: dict | None, fit: bool
) -> Tensor | None:
    frames: list = []  # fitted: [3, H, W] uint8 tensors; else [H, W, 3] arrays
    notes: list[str] = []
    size = None
    for i, f in enumerate(files):
        if transform.done(len(frames)):
            break
        if not transform.keeps(i, len(frames)):
            continue
        arr, shape = _read_image(f, notes, transform if fit else None)
        if arr is None:  # deeper than 8 bits: read everything unfitted
            return None
        if size is not None and shape != size:
            raise VideoReadError(f"{f}: frame size {shape} differs from the first frame's {size}")
        size = shape
        frames.append(arr)
    if not frames:
        raise VideoReadError(f"{folder}: no frames kept (check dataset.start / stride)")
    if not fit and len({a.dtype for a in frames}) > 1:
        frames = [a.astype(np.uint16) * (257 if a.dtype == np.uint8 else 1) for a in frames]
    if gaps := numbering_gaps(files):
        notes.append(gaps)
    _note_source(info, folder, len(files), len(frames), transform, notes, size)
    return uint8_frames_to_float(frames) if fit else transform.spatial(to_frames(frames))
