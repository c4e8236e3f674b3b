"""Decoded clips shared by the units of one run: each video is decoded once per run, not once per method.

A clip is decoded frame by frame into a :class:`~eval.framefile.FrameFile` on disk (never whole in memory: memory
bounded in video length), which the driver and the metrics read back. The runner goes method by method (one model
in memory at a time), so a video comes back once per method: its file is kept between those units when it fits
under ``runner.decode_cache_mb`` (of disk) and deleted as soon as no unit of the run needs it any more. A clip
that does not fit is not kept (and evicts nothing: with every video visited once per method in the same order,
evicting the oldest would only ever throw away the clip needed next); it is decoded again when the next method
reaches it. Every read gives fresh tensors, so a method that writes into its input frames changes nothing here.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

from eval.datasets.base import Video, VideoReadError
from eval.framefile import FrameFile

log = logging.getLogger(__name__)


def clip_key(video: Video) -> tuple[str, str]:
    """A decoded clip's identity: its name and fingerprint (content, preprocessing, decoding code)."""
    return video.name, video.fingerprint


def spool(video: Video, folder: str | Path) -> FrameFile:
    """Decode ``video`` frame by frame into a FrameFile in ``folder``."""
    n, frames = video.frames()
    out: FrameFile | None = None
    k = 0
    try:
        for k, frame in enumerate(frames):
            if out is None:
                fd, path = tempfile.mkstemp(dir=folder, suffix=".f32")
                os.close(fd)
                out = FrameFile(path, n, tuple(frame.shape))
            if k >= n:
                raise VideoReadError(f"{video.name}: more frames decoded than the {n} declared")
            try:
                out[k] = frame
            except ValueError as exc:
                raise VideoReadError(f"{video.name}: frame {k}: {exc}") from exc
        if out is None:
            raise VideoReadError(f"{video.name}: no frames")
        if k + 1 != n:
            raise VideoReadError(f"{video.name}: {k + 1} frames decoded, {n} declared")
    except BaseException:
        if out is not None:
            out.close()
        raise
    return out


class DecodedClips:
    """``get(video)`` decodes (``spool``) or returns the kept clip; ``release(video)`` marks one of the run's units
    of that video as finished (and deletes a file not kept). ``uses``: how many units of the run each video has."""

    def __init__(self, cap_mb: float, uses: Counter[tuple[str, str]]) -> None:
        self.cap_bytes = max(0.0, float(cap_mb)) * 2**20
        self.left = Counter(uses)
        self.kept: dict[tuple[str, str], FrameFile] = {}
        self.loose: dict[tuple[str, str], FrameFile] = {}  # handed out, not kept: deleted on release
        self.kept_bytes = 0
        self.decodes = 0  # decodes (a test and benchmarks/harness_cost.py read it)
        self.hits = 0
        self._dir: tempfile.TemporaryDirectory | None = None

    def get(self, video: Video) -> FrameFile:
        key = clip_key(video)
        if key in self.kept:
            self.hits += 1
            return self.kept[key]
        self._close_loose(key)
        frames = spool(video, self._folder())
        self.decodes += 1
        size = frames.n * frames.frame_bytes
        if self.left[key] > 1 and self.kept_bytes + size <= self.cap_bytes:
            self.kept[key] = frames
            self.kept_bytes += size
        else:
            self.loose[key] = frames
        return frames

    def new(self, shape: tuple[int, ...]) -> FrameFile:
        """An empty FrameFile of ``shape`` ``[T, 3, H, W]`` beside the clips (a stream's outputs); the caller
        closes it."""
        fd, path = tempfile.mkstemp(dir=self._folder(), suffix=".f32")
        os.close(fd)
        return FrameFile(path, shape[0], tuple(shape[1:]))

    def _folder(self) -> str:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="live2diff_bench_clips_")
        return self._dir.name

    def release(self, video: Video) -> None:
        key = clip_key(video)
        self.left[key] -= 1
        self._close_loose(key)
        if self.left[key] <= 0:
            self._drop(key)

    def _close_loose(self, key: tuple[str, str]) -> None:
        frames = self.loose.pop(key, None)
        if frames is not None:
            frames.close()

    def _drop(self, key: tuple[str, str]) -> None:
        if key in self.kept:
            frames = self.kept.pop(key)
            self.kept_bytes -= frames.n * frames.frame_bytes
            frames.close()

    def clear(self) -> None:
        for frames in [*self.kept.values(), *self.loose.values()]:
            frames.close()
        self.kept.clear()
        self.loose.clear()
        self.kept_bytes = 0
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
