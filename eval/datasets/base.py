"""Videos, their preprocessing, prompts and sharding — shared by every dataset.

A dataset lists :class:`Video` objects cheaply (no decoding); frames are decoded only when a unit actually runs,
so a resumed run that skips finished units never touches the files. A video's ``fingerprint`` changes whenever its
content or preprocessing changes, and is part of every result's content hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)


class VideoReadError(RuntimeError):
    """A video could not be read (missing, corrupt, empty, wrong channels); the message says why."""


def storable(name: str) -> bool:
    """Whether a name can be stored as it is: results tables (parquet), JSON and logs are UTF-8, and a file name
    that is not valid UTF-8 reaches Python as a string with surrogates (``os.fsdecode``) that none of them take."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str | os.PathLike | bytes) -> str:
    """A name or path as UTF-8 text for messages, logs and tables: the bytes of a non-UTF-8 file name appear as
    ``\\xNN`` escapes (``bad\\xff.mp4``) instead of failing every write that meets them."""
    s = os.fsdecode(text) if isinstance(text, bytes | os.PathLike) else str(text)
    if storable(s):
        return s
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name produced
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class Video:
    name: str
    prompt: str
    fps: float
    fingerprint: str
    loader: Callable[[], Tensor] = field(repr=False)
    meta: dict = field(default_factory=dict, repr=False)
    # frame by frame (``[3, H, W]``), for a dataset that can decode without holding the clip; with its count
    stream: Callable[[], Iterator[Tensor]] | None = field(default=None, repr=False)
    num_frames: int | None = None

    def load(self) -> Tensor:
        """Decode and preprocess: float32 ``[T, 3, H, W]`` in ``[0, 1]``."""
        frames = self.loader()
        if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise VideoReadError(f"{self.name}: expected frames [T, 3, H, W], got {shape}")
        if frames.shape[0] == 0:
            raise VideoReadError(f"{self.name}: no frames")
        return frames

    def frames(self) -> tuple[int, Iterator[Tensor]]:
        """The frame count and the frames one ``[3, H, W]`` at a time: streamed where the dataset can
        (``stream``), else from :meth:`load` (the whole clip, decoded at once)."""
        if self.stream is None or self.num_frames is None:
            clip = self.load()
            return int(clip.shape[0]), iter(clip)
        if self.num_frames == 0:
            raise VideoReadError(f"{self.name}: no frames")
        return int(self.num_frames), self._checked(self.stream())

    def _checked(self, frames: Iterator[Tensor]) -> Iterator[Tensor]:
        for frame in frames:
            if not isinstance(frame, Tensor) or frame.ndim != 3 or frame.shape[0] != 3:
                shape = tuple(frame.shape) if isinstance(frame, Tensor) else type(frame).__name__
                raise VideoReadError(f"{self.name}: expected frames [3, H, W], got {shape}")
            yield frame


@dataclass(frozen=True)
class FrameTransform:
    """Temporal subsampling and spatial fitting to a model resolution.

    ``size`` is ``[height, width]`` (or ``None`` to keep the source size rounded down to ``multiple_of``);
    ``mode`` is ``resize`` (stretch), ``crop`` (centre crop, no scaling) or ``resize_crop`` (scale the short side,
    then centre crop — keeps the aspect ratio; the default).
    """

    size: tuple[int, int] | None = None
    mode: str = "resize_crop"
    multiple_of: int = 8
    max_frames: int | None = None
    stride: int = 1
    start: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("resize", "crop", "resize_crop"):
            raise ValueError(f"dataset.resize_mode must be resize, crop or resize_crop, got {self.mode!r}")
        if self.stride < 1:
            raise ValueError(f"dataset.stride must be >= 1, got {self.stride}")
        if self.size is not None and any(s % self.multiple_of for s in self.size):
            raise ValueError(
                f"dataset.size {list(self.size)} must be multiples of {self.multiple_of} (VAE stride)"
            )

    def keeps(self, i: int, kept_so_far: int) -> bool:
        return (
            i >= self.start
            and (i - self.start) % self.stride == 0
            and (self.max_frames is None or kept_so_far < self.max_frames)
        )

    def done(self, kept_so_far: int) -> bool:
        return self.max_frames is not None and kept_so_far >= self.max_frames

    def spatial(self, frames: Tensor) -> Tensor:
        """``[T, 3, h, w]`` -> ``[T, 3, H, W]``."""
        h, w = frames.shape[-2:]
        m = self.multiple_of
        if self.size is None:
            th, tw = (h // m) * m, (w // m) * m
            if th == 0 or tw == 0:
                raise VideoReadError(
                    f"frames are {h}x{w} px, smaller than {m} px (one VAE stride); set dataset.size=[64,64] "
                    "(or larger) to resize them"
                )
            if (th, tw) == (h, w):
                return frames
            return _centre_crop(frames, th, tw)
        th, tw = self.size
        if self.mode == "resize":
            return _resize(frames, th, tw)
        if self.mode == "crop":
            if th > h or tw > w:
                raise VideoReadError(
                    f"cannot crop {h}x{w} frames to {th}x{tw}; use dataset.resize_mode=resize_crop"
                )
            return _centre_crop(frames, th, tw)
        scale = max(th / h, tw / w)
        rh, rw = max(th, math.ceil(h * scale)), max(tw, math.ceil(w * scale))
        return _centre_crop(_resize(frames, rh, rw), th, tw)

    def upscale(self, h: int, w: int) -> float | None:
        """The factor :meth:`spatial` enlarges an ``h x w`` source by (> 1), or None when it does not enlarge it."""
        if self.size is None or self.mode == "crop":
            return None
        th, tw = self.size
        scale = max(th / h, tw / w)  # resize_crop scales by it; resize stretches at least one side by it
        return scale if scale > 1 else None

    def fit_uint8(self, arr: np.ndarray) -> Tensor:
        """One 8-bit ``[H, W, 3]`` frame -> ``[3, H', W']`` uint8 at the output size: :meth:`spatial` on the 8-bit
        pixels (torch's vectorised uint8 antialiased bilinear kernel on the channels-last view, no float copy of
        the full-size frame). Values differ from :meth:`spatial` on float frames by the rounding to 8 bits (at most
        1/255)."""
        if arr.flags.writeable:
            x = torch.from_numpy(arr)
        else:  # Pillow's arrays are read-only: only read here, so torch's warning about writing does not apply
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                x = torch.from_numpy(arr)
        return self.spatial(x.permute(2, 0, 1).unsqueeze(0))[0]

    def draft_size(self, h: int, w: int) -> tuple[int, int] | None:
        """``(width, height)`` a JPEG may be decoded at (libjpeg's DCT scaling, ``Image.draft``, which picks the
        smallest of 1/2, 1/4, 1/8 that is at least this large) when :meth:`spatial` shrinks the frame 4x or more:
        twice the size of its resize, so the last 2x is the same antialiased bilinear resample. None otherwise."""
        if self.size is None or self.mode == "crop":
            return None
        th, tw = self.size
        if self.mode == "resize":
            fy, fx = h / th, w / tw
        else:
            fy = fx = 1 / max(th / h, tw / w)
        if min(fx, fy) < 4:
            return None
        return math.ceil(2 * w / fx), math.ceil(2 * h / fy)

    def describe(self) -> dict:
        return {
            "size": list(self.size) if self.size else None,
            "mode": self.mode,
            "multiple_of": self.multiple_of,
            "max_frames": self.max_frames,
            "stride": self.stride,
            "start": self.start,
        }


def _resize(frames: Tensor, h: int, w: int) -> Tensor:
    if frames.shape[-2:] == (h, w):
        return frames
    out = F.interpolate(frames, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp_(0, 1) if out.is_floating_point() else out


def _centre_crop(frames: Tensor, h: int, w: int) -> Tensor:
    fh, fw = frames.shape[-2:]
    top, left = (fh - h) // 2, (fw - w) // 2
    return frames[..., top : top + h, left : left + w].contiguous()


_HUGE = 1 << 21


@functools.lru_cache(maxsize=1)
def _madvise():
    import ctypes

    try:
        fn = ctypes.CDLL("libc.so.6", use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return fn


def empty_frames(shape: tuple[int, ...]) -> Tensor:
    """An uninitialised float32 tensor for a whole clip, backed by transparent huge pages where Linux offers them
    on request (``madvise``). A clip is a fresh allocation of ~3 MB a 512x512 frame; filling it page by page cost
    1-5 ms a frame in page faults (more on a loaded machine), with 2 MB pages ~0.3. Elsewhere a plain
    ``torch.empty``."""
    out = torch.empty(shape, dtype=torch.float32)
    madvise = _madvise() if sys.platform.startswith("linux") else None
    nbytes = out.numel() * 4
    if madvise is not None and nbytes >= 2 * _HUGE:
        start = (out.data_ptr() + _HUGE - 1) & ~(_HUGE - 1)
        end = (out.data_ptr() + nbytes) & ~(_HUGE - 1)
        if end > start:
            madvise(start, end - start, 14)  # MADV_HUGEPAGE; a refusal (EINVAL, THP off) changes nothing
    return out


def uint8_frames_to_float(frames: list[Tensor]) -> Tensor:
    """``[3, H, W]`` uint8 frames -> float32 ``[T, 3, H, W]`` in ``[0, 1]`` (``x / 255``, as
    :func:`uint8_to_frames`), converted frame by frame into the one output tensor."""
    out = empty_frames((len(frames), *frames[0].shape))
    for i, f in enumerate(frames):
        torch.div(f, 255.0, out=out[i])
    return out


def uint8_to_frames(arr: np.ndarray) -> Tensor:
    """``[T, H, W, 3]`` uint8 -> float32 ``[T, 3, H, W]`` in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)


def load_prompts(path: str | Path | None) -> dict[str, str]:
    """Prompts keyed by video name from a YAML or JSON mapping; ``None``/missing file -> ``{}``.
    ``builtin:<name>[:<template>]`` reads a prompt file shipped with the project (eval/datasets/builtin_prompts.py).

    Every value must be a non-empty string: a list, a number, an empty or missing value would otherwise become the
    prompt ``"['a cat', 'a dog']"``, ``"42"`` or ``"None"``. Such entries are refused together, each with its key
    and line; so are bytes that are not UTF-8. Keys are taken as written (``00001: ...`` names video ``00001``)."""
    if path is None:
        return {}
    if str(path).startswith("builtin:"):
        from eval.datasets.builtin_prompts import load_builtin

        return load_builtin(str(path))
    path = Path(path)
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(
            f"{shown(path)}, line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}); "
            "save the prompts file as UTF-8"
        ) from None
    if path.suffix == ".json":
        entries = _json_prompts(path, text)
    else:
        entries = _yaml_prompts(path, text)
    bad = [f"line {line}: {key!r}: {what}" for key, value, line in entries if (what := _not_a_prompt(value))]
    first: dict[str, int] = {}
    for key, _, line in entries:  # a repeated key would silently keep its last value
        if key in first:
            bad.append(f"line {line}: {key!r}: given again (first at line {first[key]})")
        first.setdefault(key, line)
    if bad:
        raise ValueError(
            f"{shown(path)}: every prompt must be a non-empty string; "
            + "; ".join(bad)
            + ' (write one `name: "a watercolor painting of ..."` per video, quoted)'
        )
    return {key: value for key, value, _ in entries}


def _not_a_prompt(value: object) -> str | None:
    """Why ``value`` is not a prompt, or None when it is one."""
    if value is None:
        return "no value (empty)"
    if not isinstance(value, str):
        kind = {list: "a list", dict: "a mapping", bool: "true/false", int: "a number", float: "a number"}
        return f"{kind.get(type(value), type(value).__name__)} ({value!r}), not a string"
    if not value.strip():
        return "an empty string"
    return None


def _yaml_prompts(path: Path, text: str) -> list[tuple[str, object, int]]:
    """``(key as written, value, line)`` of a YAML mapping (its nodes carry the lines)."""
    import yaml

    try:
        root = yaml.compose(text)
        mapping = isinstance(root, yaml.MappingNode)
        constructor = yaml.SafeLoader("")
        values = [constructor.construct_object(v, deep=True) for _, v in root.value] if mapping else []
        data = None if mapping or root is None else constructor.construct_object(root, deep=True)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        start = getattr(exc, "context_mark", None)
        if start is not None and mark is not None and start.line != mark.line:
            where += f" ({getattr(exc, 'context', '') or 'starting'} at line {start.line + 1})"
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(
            f'{shown(path)}{where}: not valid YAML ({what}); write one `name: "prompt"` per line (quote prompts '
            "that contain ':' or start with a special character)"
        ) from None
    if root is None:
        return []
    if not mapping:
        raise ValueError(
            f"{shown(path)}: prompts must be a mapping of video name -> prompt, got {type(data).__name__}"
        )
    out = []
    for (key_node, _), value in zip(root.value, values):
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
        out.append((str(key), value, key_node.start_mark.line + 1))
    return out


def _json_prompts(path: Path, text: str) -> list[tuple[str, object, int]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f'{shown(path)}, line {exc.lineno}: not valid JSON ({exc.msg}); write one "name": "prompt" pair '
            "per entry"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{shown(path)}: prompts must be a mapping of video name -> prompt, got {type(data).__name__}"
        )
    out = []
    for key, value in data.items():
        at = text.find(json.dumps(key))
        out.append((key, value, text.count("\n", 0, at) + 1 if at >= 0 else 0))
    return out


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_fingerprint(path: Path) -> list:
    """Content identity of a video file: its name and the sha256 of its bytes (remembered per stat signature, so
    a re-run does not re-read it; see eval/keys.py)."""
    from eval.keys import file_digest

    return [path.name, file_digest(path)]


def folder_fingerprint(folder: Path, files: list[Path]) -> list:
    """Content identity of a frame folder: each frame's name (its order) and bytes, not sizes or mtimes."""
    from eval.keys import tree_digest

    return [folder.name, tree_digest(folder, files)]


def unreadable_video(name: str, path: Path, reason: str, fps: float = 25.0, prompt: str = "") -> Video:
    """A listed video that cannot be read (its reason known when listing): a video whose loading fails with
    ``reason``, so it becomes an error row of its own and every other video still runs."""

    def refuse() -> Tensor:
        raise VideoReadError(reason)

    ident = fingerprint("unreadable", os.fsencode(path).hex(), reason)
    return Video(
        shown(name), prompt, fps, ident, refuse, {"path": shown(path), "source": {}, "unreadable": reason}
    )


def unstorable_video(name: str, path: Path, fps: float = 25.0) -> Video:
    """A video whose name cannot be stored (not valid UTF-8): listed under its escaped name (:func:`shown`) as an
    unreadable video. Its prompt is not looked up (no prompts-file key can name it)."""
    reason = (
        f"{shown(path)}: the name '{shown(name)}' is not valid UTF-8, and results tables, JSON and logs store names "
        "as UTF-8; rename the file or folder (e.g. `convmv -f latin1 -t utf-8 --notest NAME`)"
    )
    return unreadable_video(name, path, reason, fps)


def broken_link(path: Path) -> str | None:
    """Why ``path`` is a symlink that leads nowhere (a loop, a missing target), or None."""
    import errno

    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"a symlink loop ({exc.strerror}: {shown(os.readlink(path))})"
        return f"a broken symlink (to {shown(os.readlink(path))}: {exc.strerror})"
    return None


def check_unique_names(videos: list[Video]) -> None:
    """Results are keyed and labelled by video name: two sources with one name would mix their numbers."""
    by_name: dict[str, list[Video]] = {}
    for v in videos:
        by_name.setdefault(v.name, []).append(v)
    dups = {n: vs for n, vs in by_name.items() if len(vs) > 1}
    if dups:
        lines = [
            f"{n!r}: " + " and ".join(str(v.meta.get("path", "?")) for v in vs)
            for n, vs in sorted(dups.items())
        ]
        raise ValueError(
            "duplicate video names (a video is named by its file stem or folder name): "
            + "; ".join(lines)
            + ". Rename or move one of each, or pick one with dataset.videos"
        )


def shard_problem(shard: object, num_shards: object) -> tuple[str, object, str] | None:
    """``(key, value, what it must be)`` when ``dataset.shard`` / ``dataset.num_shards`` do not name one part of a
    split, else None: the one check, run by validation before anything runs and by every dataset's constructor."""

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(num_shards) or num_shards < 1:
        return "dataset.num_shards", num_shards, "must be an integer >= 1"
    if not is_int(shard):
        return "dataset.shard", shard, "must be an integer"
    if not 0 <= shard < num_shards:
        return "dataset.shard", shard, f"must be in [0, dataset.num_shards={num_shards})"
    return None


class VideoDataset:
    """Base: holds preprocessing, prompts and sharding; subclasses implement :meth:`list_videos`
    (docs/add_your_dataset.md: a new format is a subclass in a file plus a YAML in ``conf/dataset/``)."""

    name = "dataset"

    def __init__(
        self,
        *,
        size: list[int] | None = None,
        resize_mode: str = "resize_crop",
        max_frames: int | None = None,
        stride: int = 1,
        start: int = 0,
        max_videos: int | None = None,
        videos: list[str] | None = None,
        shard: int = 0,
        num_shards: int = 1,
        default_prompt: str | None = None,
        prompts: str | None = None,
    ) -> None:
        problem = shard_problem(shard, num_shards)
        if problem:
            key, value, fix = problem
            raise ValueError(f"{key} {fix}, got {value!r}")
        self.transform = FrameTransform(
            tuple(size) if size else None, resize_mode, 8, max_frames, stride, start
        )
        self.max_videos = max_videos
        self.only = list(videos) if videos else None
        self.shard, self.num_shards = shard, num_shards
        self.default_prompt = default_prompt
        self.prompts_path = prompts

    def list_videos(self) -> list[Video]:
        raise NotImplementedError

    def videos(self) -> list[Video]:
        """The videos of this shard, in a stable order."""
        vids = sorted(self.list_videos(), key=lambda v: v.name)
        check_unique_names(vids)
        from eval.keys import code_digest

        code = code_digest(
            f"{type(self).__module__}.{type(self).__name__}"
        )  # decoding code is part of a frame
        for v in vids:
            v.fingerprint = fingerprint(v.fingerprint, code)
        if self.only is not None:
            known = {v.name for v in vids}
            missing = [n for n in self.only if n not in known]
            if missing:
                raise ValueError(f"dataset.videos names unknown videos {missing}; available: {sorted(known)}")
            vids = [v for v in vids if v.name in self.only]
        if self.max_videos is not None:
            vids = vids[: self.max_videos]
        return vids[self.shard :: self.num_shards]

    def prompt_for(self, name: str, prompts: dict[str, str]) -> str:
        if name in prompts:
            return prompts[name]
        if self.default_prompt is None:
            raise ValueError(
                f"no prompt for video {name!r}: add it to the prompts file ({self.prompts_path}) "
                "or set dataset.default_prompt"
            )
        return self.default_prompt

    def warn_unused_prompts(self, prompts: dict[str, str], names: list[str]) -> None:
        """A prompt whose key names no video is usually a typo or a renamed file: say so."""
        unused = sorted(set(prompts) - set(names))
        if unused:
            log.warning(
                "%s: prompts for %d name(s) that match no video: %s (videos: %s)",
                self.prompts_path,
                len(unused),
                ", ".join(unused[:10]) + (" ..." if len(unused) > 10 else ""),
                ", ".join(sorted(names)[:10]) + (" ..." if len(names) > 10 else ""),
            )

    def describe(self) -> dict:
        return {"dataset": self.name, "transform": self.transform.describe()}
