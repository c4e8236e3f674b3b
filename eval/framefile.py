"""Frames on disk: a clip's decoded frames or a stream's outputs, written frame by frame, read back in chunks.

The runner holds no whole clip in memory (memory bounded in video length, benchmarks/memory_vs_length.py
--runner): the decoder's frames are spooled here one at a time, the driver reads them back one at a time, the
method's outputs are written here as it emits them, and metrics and pictures read both in chunks. Reads and
writes go through the file (the kernel's page cache), not through a memory map: every touched page of a map
counts in the process's resident memory, so scoring a mapped clip grew the RSS by the clip's size again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CHUNK = 16  # frames per chunk read back for metrics and pictures


class FrameFile:
    """``n`` float32 frames of shape ``frame_shape`` (``[3, H, W]``) in one raw file (``path``), created sparse.
    ``f[i]`` and ``f[a:b]`` read fresh tensors (writing into one never changes the file); ``f[i] = frame`` writes
    frame ``i`` (any order). Deleted with :meth:`close` (or when garbage-collected)."""

    def __init__(self, path: str | os.PathLike, n: int, frame_shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.n = int(n)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.frame_bytes = int(np.prod(self.frame_shape)) * 4
        self._f = open(self.path, "w+b")  # noqa: SIM115 - closed by close()
        self._f.truncate(self.n * self.frame_bytes)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.frame_shape)

    def __len__(self) -> int:
        return self.n

    def _read(self, a: int, b: int) -> Tensor:
        out = torch.empty((b - a, *self.frame_shape), dtype=torch.float32)
        if b > a:
            self._f.seek(a * self.frame_bytes)
            view = memoryview(out.numpy()).cast("B")
            got = self._f.readinto(view)
            if got != (b - a) * self.frame_bytes:
                raise OSError(f"{self.path}: short read of frames {a}:{b} ({got} bytes)")
        return out

    def __getitem__(self, i: int | slice) -> Tensor:
        if isinstance(i, slice):
            a, b, step = i.indices(self.n)
            if step != 1:
                raise IndexError("FrameFile slices take a step of 1")
            return self._read(a, max(a, b))
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"frame {i} of {self.n}")
        return self._read(i, i + 1)[0]

    def __iter__(self) -> Iterator[Tensor]:
        for _, chunk in self.chunks():
            yield from chunk

    def __setitem__(self, i: int, frame: Tensor) -> None:
        if not 0 <= int(i) < self.n:
            raise IndexError(f"frame {i} of {self.n}")
        if tuple(frame.shape) != self.frame_shape:
            raise ValueError(f"frame of shape {tuple(frame.shape)} written to a file of {self.frame_shape}")
        arr = frame.detach().to("cpu", torch.float32).contiguous().numpy()
        self._f.seek(int(i) * self.frame_bytes)
        self._f.write(memoryview(arr).cast("B"))

    def chunks(self, size: int = CHUNK) -> Iterator[tuple[int, Tensor]]:
        """``(start, frames[start:start + size])`` over the whole file."""
        for a in range(0, self.n, size):
            yield a, self._read(a, min(self.n, a + size))

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        self.path.unlink(missing_ok=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def chunks(frames: Tensor | FrameFile, size: int = CHUNK) -> Iterator[Tensor]:
    """Consecutive chunks of ``[T, 3, H, W]`` frames, from a tensor (views) or a :class:`FrameFile`."""
    for a in range(0, len(frames), size):
        yield frames[a : a + size]
