"""Key/value cache of the uni-directional temporal attention: fixed capacity, no growth with stream length.

Layout (as the reference): one tensor per temporal-attention layer holding ``[n_steps, 2 (k, v), h*w, window, C]``
(stored head-major, see :class:`LayerKVCache`).
Slots ``0 .. warmup-1`` hold the warmup frames (attention sinks, never evicted); slots ``warmup .. window-1`` are a
FIFO ring of the most recent frames, the current frame included. Entries are the projections ``W·x`` *without*
the position encoding; positions are assigned per slot at attention time by :class:`SlotIndex`, so when the ring
wraps, the surviving frames move one position back instead of being recomputed.

:class:`SlotIndex` is the bookkeeping shared by every layer (which slot a new frame goes to, which slots are
valid, the position of each slot); :class:`LayerKVCache` is one layer's storage.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor


class SlotIndex:
    """Per denoising step: which cache slots are filled and at which temporal position each one sits.

    Positions: warmup slot ``i`` -> ``i``; the ring's frames, oldest to newest, -> ``n_warm, n_warm+1, ...``; the
    newest (the frame being denoised) therefore sits at the largest position, exactly as in the offline training
    mask while the stream is no longer than the window.
    """

    def __init__(self, n_steps: int, window: int, warmup: int):
        if not 0 <= warmup < window:
            raise ValueError(f"need 0 <= warmup < window, got warmup={warmup}, window={window}")
        self.n_steps, self.window, self.warmup = int(n_steps), int(window), int(warmup)
        self.ring_capacity = self.window - self.warmup
        self.reset()

    def reset(self) -> None:
        self.n_warm = [0] * self.n_steps
        self.ring: list[deque[int]] = [deque() for _ in range(self.n_steps)]
        self.frames_seen = [0] * self.n_steps

    def set_warmup(self, step: int, n_frames: int) -> None:
        if n_frames > self.warmup:
            raise ValueError(f"{n_frames} warmup frames do not fit the {self.warmup} warmup slots")
        self.n_warm[step] = n_frames
        self.ring[step].clear()
        self.frames_seen[step] = n_frames

    def advance(self, step: int) -> int:
        """Reserve the slot for a new frame at ``step`` (evicting the oldest ring frame when full)."""
        ring = self.ring[step]
        if len(ring) < self.ring_capacity:
            slot = self.warmup + len(ring)
        else:
            slot = ring.popleft()
        ring.append(slot)
        self.frames_seen[step] += 1
        return slot

    def positions(self, step: int) -> tuple[list[int], list[bool]]:
        """``(position of each slot, whether it is filled)``, both of length ``window``."""
        pos = [0] * self.window
        valid = [False] * self.window
        nw = self.n_warm[step]
        for i in range(nw):
            pos[i], valid[i] = i, True
        for r, slot in enumerate(self.ring[step]):
            pos[slot], valid[slot] = nw + r, True
        return pos, valid


class LayerKVCache:
    """One temporal-attention layer's cache, allocated on first write (when ``h*w`` and ``C`` are known).

    Holds the reference's ``[n_steps, 2, h*w, window, C]`` content, stored head-major as
    ``[2, n_steps, h*w, heads, window, C/heads]`` so that one step's keys are contiguous and a query attends to them
    with plain batched matmuls (no copy of the cache per call); :meth:`as_reference_layout` returns the reference
    order."""

    def __init__(self, n_steps: int, window: int):
        self.n_steps, self.window = int(n_steps), int(window)
        self.kv: Tensor | None = None

    def ensure(self, hw: int, heads: int, head_dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        shape = (2, self.n_steps, hw, heads, self.window, head_dim)
        if (
            self.kv is None
            or tuple(self.kv.shape) != shape
            or self.kv.device != device
            or self.kv.dtype != dtype
        ):
            self.kv = torch.zeros(shape, device=device, dtype=dtype)
        return self.kv

    def as_reference_layout(self) -> Tensor | None:
        """``[n_steps, 2 (k, v), h*w, window, C]`` (a copy), the reference's layout."""
        if self.kv is None:
            return None
        two, s, hw, h, w, d = self.kv.shape
        return self.kv.permute(1, 0, 2, 4, 3, 5).reshape(s, two, hw, w, h * d)

    @property
    def reference_shape(self) -> tuple[int, ...] | None:
        if self.kv is None:
            return None
        two, s, hw, h, w, d = self.kv.shape
        return (s, two, hw, w, h * d)

    def clear(self) -> None:
        self.kv = None

    @property
    def nbytes(self) -> int:
        return 0 if self.kv is None else self.kv.numel() * self.kv.element_size()
