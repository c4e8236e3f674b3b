"""Key/value cache of the uni-directional temporal attention: fixed capacity, no growth with stream length.

Content (as the reference): per temporal-attention layer ``[n_steps, 2 (k, v), h*w, window, C]``, stored in the
layout its attention kernel reads without a copy (see :class:`LayerKVCache`).
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


KERNELS = ("auto", "vector", "sdpa")


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """``auto``: ``vector`` on CPU, ``sdpa`` elsewhere."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown temporal-attention kernel '{kernel}'; use one of {KERNELS}")
    if kernel == "auto":
        return "vector" if torch.device(device).type == "cpu" else "sdpa"
    return kernel


class LayerKVCache:
    """One temporal-attention layer's cache: preallocated on first write (when ``h*w`` and ``C`` are known), then
    written in place, slot by slot, for the rest of the stream (no growth, no copy of the cache per call).

    Holds the reference's ``[n_steps, 2, h*w, window, C]`` content in the layout its attention kernel reads without
    a copy (:meth:`as_reference_layout` returns the reference order):

    * ``vector`` (CPU): ``k``, ``v`` each ``[n_steps, window, heads, C/heads, h*w]``: pixels innermost, so one
      query per pixel against its ``window`` keys is a few vectorised elementwise passes over contiguous memory
      (batched matmuls of ``1 x d`` by ``d x window`` matrices ran ~4x slower on CPU, SDPA ~3x), and a frame's
      entry is one contiguous block (``index_copy_`` of all rows at once).
    * ``sdpa`` (CUDA, any other device): ``k`` ``[n_steps, h*w, heads, window, d]`` and ``v`` ``[n_steps, h*w,
      heads, window, d + window]``, so one step's keys are the ``[B, heads, window, d]`` operand of
      ``scaled_dot_product_attention`` as a view. The value rows carry a constant one-hot of their slot in the last
      ``window`` columns (written once at allocation): the attention then also returns its weights per slot, which
      the position term of the values needs (``sum_j w_j W_v pe[pos_j]``) without a second pass over the keys.
    """

    def __init__(self, n_steps: int, window: int, kernel: str = "auto"):
        resolve_kernel(kernel, "cpu")  # validates the name
        self.n_steps, self.window, self.requested = int(n_steps), int(window), kernel
        self.kernel = "vector"  # resolved against the device at allocation
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.heads = self.head_dim = self.hw = 0

    def ensure(self, hw: int, heads: int, head_dim: int, device: torch.device, dtype: torch.dtype) -> None:
        key = (hw, heads, head_dim, torch.device(device), dtype)
        if self.k is not None and key == (self.hw, self.heads, self.head_dim, self.k.device, self.k.dtype):
            return
        s, w = self.n_steps, self.window
        self.kernel = resolve_kernel(self.requested, device)
        if self.kernel == "vector":
            self.k = torch.zeros((s, w, heads, head_dim, hw), device=device, dtype=dtype)
            self.v = torch.zeros((s, w, heads, head_dim, hw), device=device, dtype=dtype)
        else:
            self.k = torch.zeros((s, hw, heads, w, head_dim), device=device, dtype=dtype)
            self.v = torch.zeros((s, hw, heads, w, head_dim + w), device=device, dtype=dtype)
            self.v[..., head_dim:] = torch.eye(w, device=device, dtype=dtype)
        self.hw, self.heads, self.head_dim = hw, heads, head_dim

    def write(self, step: int, slot: int | slice, k: Tensor, v: Tensor) -> None:
        """Store ``k``, ``v`` (``[h*w, F, C]``: ``F`` frames, written to ``slot`` or the slots of a slice) in place."""
        hw, f, c = k.shape
        h, d = self.heads, self.head_dim
        if self.kernel == "vector":  # [hw, F, h, d] -> [F, h, d, hw]
            kk = k.reshape(hw, f, h, d).permute(1, 2, 3, 0)
            vv = v.reshape(hw, f, h, d).permute(1, 2, 3, 0)
            if isinstance(slot, int):
                kk, vv = kk[0], vv[0]
            self.k[step, slot] = kk
            self.v[step, slot] = vv
        else:  # [hw, F, h, d] -> [hw, h, F, d]
            kk = k.reshape(hw, f, h, d).transpose(1, 2)
            vv = v.reshape(hw, f, h, d).transpose(1, 2)
            if isinstance(slot, int):
                kk, vv = kk[:, :, 0], vv[:, :, 0]
            self.k[step, :, :, slot] = kk
            self.v[step, :, :, slot, :d] = vv

    def write_rows(self, steps: Tensor, slots: Tensor, flat: Tensor, k: Tensor, v: Tensor) -> None:
        """Stream call: row ``i`` of ``k``, ``v`` (``[nb*h*w, 1, C]``, rows major) goes to ``(steps[i], slots[i])``;
        ``flat = steps * window + slots``. One in-place op per tensor, whatever the number of rows."""
        nb = steps.shape[0]
        h, d, hw = self.heads, self.head_dim, self.hw
        if self.kernel == "vector":
            s, w = self.n_steps, self.window
            self.k.view(s * w, h, d, hw).index_copy_(0, flat, k.reshape(nb, hw, h, d).permute(0, 2, 3, 1))
            self.v.view(s * w, h, d, hw).index_copy_(0, flat, v.reshape(nb, hw, h, d).permute(0, 2, 3, 1))
        else:
            self.k[steps, :, :, slots] = k.reshape(nb, hw, h, d)
            self.v[steps, :, :, slots, :d] = v.reshape(nb, hw, h, d)

    def steps_view(self, steps: list[int]) -> tuple[Tensor, Tensor]:
        """Keys and values of the given denoising steps, stacked: a view when the steps are consecutive."""
        s0 = steps[0]
        if steps == list(range(s0, s0 + len(steps))):
            return self.k[s0 : s0 + len(steps)], self.v[s0 : s0 + len(steps)]
        idx = torch.tensor(steps, device=self.k.device)
        return self.k.index_select(0, idx), self.v.index_select(0, idx)

    def as_reference_layout(self) -> Tensor | None:
        """``[n_steps, 2 (k, v), h*w, window, C]`` (a copy), the reference's layout."""
        if self.k is None:
            return None
        if self.kernel == "vector":  # [s, w, h, d, hw] -> [s, hw, w, h, d]
            k, v = (t.permute(0, 4, 1, 2, 3) for t in (self.k, self.v))
        else:  # [s, hw, h, w, d] -> [s, hw, w, h, d]
            k, v = self.k.transpose(2, 3), self.v[..., : self.head_dim].transpose(2, 3)
        s, hw, w = k.shape[:3]
        return torch.stack([k, v], dim=1).reshape(s, 2, hw, w, self.heads * self.head_dim)

    @property
    def reference_shape(self) -> tuple[int, ...] | None:
        if self.k is None:
            return None
        return (self.n_steps, 2, self.hw, self.window, self.heads * self.head_dim)

    def clear(self) -> None:
        self.k = self.v = None
        self.heads = self.head_dim = self.hw = 0

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else sum(t.numel() * t.element_size() for t in (self.k, self.v))
