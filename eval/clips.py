"""Decoded clips shared by the units of one run: each video is decoded once per run, not once per method.

The runner goes method by method (one model in memory at a time), so a video comes back once per method. Its
decoded, preprocessed frames are kept between those units when they fit under ``runner.decode_cache_mb`` and
dropped as soon as no unit of the run needs them any more. A clip that does not fit is not kept (and evicts
nothing: with every video visited once per method in the same order, evicting the oldest would only ever throw
away the clip needed next); it is decoded again when the next method reaches it.
"""

from __future__ import annotations

import logging
from collections import Counter

from torch import Tensor

from eval.datasets.base import Video

log = logging.getLogger(__name__)


def clip_key(video: Video) -> tuple[str, str]:
    """A decoded clip's identity: its name and fingerprint (content, preprocessing, decoding code)."""
    return video.name, video.fingerprint


class DecodedClips:
    """``get(video)`` decodes (``video.load()``) or returns the kept clip; ``release(video)`` marks one of the
    run's units of that video as finished. ``uses``: how many units of the run each video has."""

    def __init__(self, cap_mb: float, uses: Counter[tuple[str, str]]) -> None:
        self.cap_bytes = max(0.0, float(cap_mb)) * 2**20
        self.left = Counter(uses)
        self.kept: dict[tuple[str, str], tuple[Tensor, float]] = {}  # frames, their sum (a method must not
        # change its input frames in place; if one does, the next method gets a fresh decode, not its leftovers)
        self.kept_bytes = 0
        self.decodes = 0  # video.load() calls (a test and benchmarks/harness_cost.py read it)
        self.hits = 0

    def get(self, video: Video) -> Tensor:
        key = clip_key(video)
        if key in self.kept:
            frames, checksum = self.kept[key]
            now = _checksum(frames)
            if now == checksum or (now != now and checksum != checksum):  # NaN == NaN here
                self.hits += 1
                return frames
            log.warning(
                "%s: the decoded frames changed after a unit used them (a method wrote into its input frames); "
                "decoding the video again",
                video.name,
            )
            self._drop(key)
        frames = video.load()
        self.decodes += 1
        size = frames.numel() * frames.element_size()
        if self.left[key] > 1 and self.kept_bytes + size <= self.cap_bytes:
            self.kept[key] = (frames, _checksum(frames))
            self.kept_bytes += size
        return frames

    def release(self, video: Video) -> None:
        key = clip_key(video)
        self.left[key] -= 1
        if self.left[key] <= 0:
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        if key in self.kept:
            frames, _ = self.kept.pop(key)
            self.kept_bytes -= frames.numel() * frames.element_size()

    def clear(self) -> None:
        self.kept.clear()
        self.kept_bytes = 0


def _checksum(frames: Tensor) -> float:
    """One read of the frames (~0.2 ms a 512x512 frame; a float64 sum costs 25 times that): a method that writes
    into its input frames changes it (a change too small to move a float32 sum changes no metric either)."""
    return float(frames.sum())
