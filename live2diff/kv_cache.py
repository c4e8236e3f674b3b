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
        self.cursor = 0  # the ring slot a stream call offers every step (see :meth:`advance_all`)

    def set_warmup(self, step: int, n_frames: int) -> None:
        if n_frames > self.warmup:
            raise ValueError(f"{n_frames} warmup frames do not fit the {self.warmup} warmup slots")
        self.n_warm[step] = n_frames
        self.ring[step].clear()
        self.frames_seen[step] = n_frames

    def advance(self, step: int, preferred: int | None = None) -> int:
        """Reserve the slot for a new frame at ``step``: the oldest ring frame's when the ring is full (FIFO
        eviction), else a free ring slot (``preferred`` if it is free)."""
        ring = self.ring[step]
        if len(ring) < self.ring_capacity:
            if preferred is not None and preferred not in ring and self.warmup <= preferred < self.window:
                slot = preferred
            else:
                slot = next(s for s in range(self.warmup, self.window) if s not in ring)
        else:
            slot = ring.popleft()
        ring.append(slot)
        self.frames_seen[step] += 1
        return slot

    def advance_all(self, steps: list[int]) -> list[int]:
        """One stream call: a slot for a new frame at each of ``steps``. Every step is offered the same slot (a
        cursor that moves by one slot per call), so once each step is written at every call — the stream batch's
        steady state — all rows of a call land in one slot: the write is a single slice per layer. (A full ring's
        oldest frame is then always the cursor's slot, the ring period being its capacity.)"""
        preferred = self.warmup + self.cursor
        self.cursor = (self.cursor + 1) % self.ring_capacity
        return [self.advance(s, preferred) for s in steps]

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

    def end_call(self, steps: list[int]) -> None:
        """After a stream call (nothing to do: :meth:`advance` already moved the ring)."""


class ReferenceSlotIndex:
    """The reference pipeline's own slot bookkeeping, for a stream batch that is full from its first call (the
    stream buffer's placeholder rows fill the steps no frame has reached yet; ``stream_buffer: reference``).

    Per step the reference keeps a visible prefix of the window's slots (its additive ``attn_bias``), the slot the
    next row writes (``update_idx``) and each slot's position (``pe_idx``, ``0..window-1`` until the window is full,
    then the ring's positions rotate by one per call). It starts (``initialize_attn_bias_pe_and_update_idx``) with
    the warmup slots visible and step 0 also seeing slot ``warmup``, where it writes; step 1 writes slot
    ``warmup + 1``, later steps slot ``warmup``, both outside their visible prefix: at the first call the rows of
    steps >= 1 (placeholders) attend the warmup frames only, not themselves, with query position ``warmup + 1``
    (step 1) or ``warmup`` (later steps), and their entries are overwritten at a later call. After each call
    (``update_attn_bias``) a step whose window is not yet all visible writes next at its first hidden slot, else
    its ring positions rotate and it writes the slot that then has the largest position; one more slot becomes
    visible. Steps >= 2 therefore see the placeholders written at calls 1..step-1 until the ring has wrapped.

    Same interface as :class:`SlotIndex`; a step's state only moves when a row at that step runs (the reference
    runs every step at every call; here a draining stream batch skips the steps no frame is at any more).

    Storage: step 0 writes its ring one slot ahead of the other steps (it sees slot ``warmup`` from the start), so
    its ring slots are stored shifted back by one (:meth:`_stored`; attention does not depend on where a key is
    stored, only on its position and visibility): from the second call on every row of a call writes the same
    stored slot, one slice per layer, as in :class:`SlotIndex`'s steady state."""

    def __init__(self, n_steps: int, window: int, warmup: int):
        if not 0 < warmup < window - 1:
            raise ValueError(
                f"the reference's bookkeeping needs 0 < warmup < window - 1, got warmup={warmup}, window={window}"
            )
        self.n_steps, self.window, self.warmup = int(n_steps), int(window), int(warmup)
        self.ring_capacity = self.window - self.warmup
        self.reset()

    def _stored(self, step: int, slot: int) -> int:
        """Where the reference's ``slot`` of ``step`` is stored (step 0's ring slots one back, see above)."""
        if step != 0 or slot < self.warmup:
            return slot
        return self.warmup + (slot - self.warmup - 1) % self.ring_capacity

    def reset(self) -> None:
        self.visible = [0] * self.n_steps
        self.write = [0] * self.n_steps
        self.pos = [list(range(self.window)) for _ in range(self.n_steps)]

    def set_warmup(self, step: int, n_frames: int) -> None:
        if n_frames > self.warmup:
            raise ValueError(f"{n_frames} warmup frames do not fit the {self.warmup} warmup slots")
        self.visible[step] = n_frames + (1 if step == 0 else 0)
        self.write[step] = n_frames + (1 if step == 1 else 0)
        self.pos[step] = list(range(self.window))

    def advance_all(self, steps: list[int]) -> list[int]:
        return [self._stored(s, self.write[s]) for s in steps]

    def positions(self, step: int) -> tuple[list[int], list[bool]]:
        pos, valid = [0] * self.window, [False] * self.window
        for slot in range(self.window):
            at = self._stored(step, slot)
            pos[at], valid[at] = self.pos[step][slot], slot < self.visible[step]
        return pos, valid

    def end_call(self, steps: list[int]) -> None:
        w = self.warmup
        for s in steps:
            if self.visible[s] < self.window:
                self.write[s] = self.visible[s]
            else:
                ring = self.pos[s][w:]
                self.pos[s][w:] = ring[-1:] + ring[:-1]
                self.write[s] = max(range(self.window), key=self.pos[s].__getitem__)
            self.visible[s] = min(self.visible[s] + 1, self.window)


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

    * ``vector`` (CPU): one buffer ``kv`` ``[2 (k, v), heads, window, C/heads, n_steps, h*w]`` (``k``, ``v`` are
      its two halves): (step, pixel) innermost, the layout in which one matrix product ``W @ x^T`` returns a
      stream call's projections (channels by (row, pixel)). One query per pixel against its ``window`` keys is
      then a few vectorised elementwise passes over contiguous memory (batched matmuls of ``1 x d`` by
      ``d x window`` matrices ran ~4x slower on CPU, SDPA ~3x), and the keys and values of a stream call's rows —
      consecutive steps, one slot (:meth:`SlotIndex.advance_all`) — are written with one slice assignment of the
      product's rows, no permutation (:meth:`write_call`).
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
        self.kv: Tensor | None = None  # vector kernel: k and v in one buffer
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.heads = self.head_dim = self.hw = 0
        self._views: dict = {}  # views of the storage reused every call (write destinations, step ranges)

    def ensure(self, hw: int, heads: int, head_dim: int, device: torch.device, dtype: torch.dtype) -> None:
        if (
            self.k is not None
            and hw == self.hw
            and heads == self.heads
            and head_dim == self.head_dim
            and dtype == self.k.dtype
            and self.k.device == torch.device(device)
        ):
            return
        s, w = self.n_steps, self.window
        self._views = {}
        self.kernel = resolve_kernel(self.requested, device)
        if self.kernel == "vector":
            self.kv = torch.zeros((2, heads, w, head_dim, s, hw), device=device, dtype=dtype)
            self.k, self.v = self.kv[0], self.kv[1]
        else:
            self.kv = None
            self.k = torch.zeros((s, hw, heads, w, head_dim), device=device, dtype=dtype)
            self.v = torch.zeros((s, hw, heads, w, head_dim + w), device=device, dtype=dtype)
            self.v[..., head_dim:] = torch.eye(w, device=device, dtype=dtype)
        self.hw, self.heads, self.head_dim = hw, heads, head_dim

    def write(self, step: int, slot: int | slice, k: Tensor, v: Tensor) -> None:
        """Store ``k``, ``v`` (``[h*w, F, C]``: ``F`` frames, written to ``slot`` or the slots of a slice) in place."""
        hw, f, c = k.shape
        h, d = self.heads, self.head_dim
        if self.kernel == "vector":  # [hw, F, h, d] -> [h, F, d, hw]
            kk = k.reshape(hw, f, h, d).permute(2, 1, 3, 0)
            vv = v.reshape(hw, f, h, d).permute(2, 1, 3, 0)
            if isinstance(slot, int):
                kk, vv = kk[:, 0], vv[:, 0]
            self.k[:, slot, :, step] = kk
            self.v[:, slot, :, step] = vv
        else:  # [hw, F, h, d] -> [hw, h, F, d]
            kk = k.reshape(hw, f, h, d).transpose(1, 2)
            vv = v.reshape(hw, f, h, d).transpose(1, 2)
            if isinstance(slot, int):
                kk, vv = kk[:, :, 0], vv[:, :, 0]
            self.k[step, :, :, slot] = kk
            self.v[step, :, :, slot, :d] = vv

    def write_call(self, steps: list[int], slots: list[int], kv: Tensor, aligned: bool) -> None:
        """``vector`` kernel, stream call: row ``i``'s keys and values (``kv[:, :, :, i]`` of ``[2, h, d, nb,
        h*w]``) go to step ``steps[i]``, slot ``slots[i]``. ``aligned`` (consecutive steps sharing one slot: the
        steady state): one slice assignment for all rows, keys and values together; otherwise one per row."""
        if aligned:  # the destination view, made once per slot (a stream cycles through the ring's slots)
            key = (slots[0], steps[0], len(steps))
            dst = self._views.get(key)
            if dst is None:
                dst = self._views[key] = self.kv[:, :, slots[0], :, steps[0] : steps[0] + len(steps)]
            dst.copy_(kv)
        else:
            for i, (step, slot) in enumerate(zip(steps, slots)):
                self.kv[:, :, slot, :, step] = kv[:, :, :, i]

    def write_rows_vector(self, steps: Tensor, slots: Tensor, kv: Tensor) -> None:
        """``vector`` kernel, index tensors (capture mode): row ``i``'s keys and values (``kv[:, :, :, i]`` of
        ``[2, h, d, nb, h*w]``) go to ``(steps[i], slots[i])``; one in-place op whatever the rows' slots."""
        self.kv[:, :, slots, :, steps] = kv.permute(3, 0, 1, 2, 4)

    def write_rows(self, steps: Tensor, slots: Tensor, k: Tensor, v: Tensor) -> None:
        """``sdpa`` kernel, stream call: row ``i`` of ``k``, ``v`` (``[nb*h*w, 1, C]``, rows major) goes to
        ``(steps[i], slots[i])``. One in-place op per tensor, whatever the number of rows."""
        nb = steps.shape[0]
        h, d, hw = self.heads, self.head_dim, self.hw
        self.k[steps, :, :, slots] = k.reshape(nb, hw, h, d)
        self.v[steps, :, :, slots, :d] = v.reshape(nb, hw, h, d)

    def steps_view(self, steps: list[int]) -> tuple[Tensor, Tensor]:
        """Keys and values of the given denoising steps, stacked (``sdpa``: ``[nb, h*w, heads, window, d]``;
        ``vector``: ``[heads, window, d, nb, h*w]``): a view when the steps are consecutive."""
        dim = 3 if self.kernel == "vector" else 0
        s0 = steps[0]
        if steps == list(range(s0, s0 + len(steps))):
            if torch.compiler.is_compiling():  # traced: a view is free, no Python memo inside the graph
                return self.k.narrow(dim, s0, len(steps)), self.v.narrow(dim, s0, len(steps))
            key = ("steps", s0, len(steps))
            got = self._views.get(key)
            if got is None:
                got = self._views[key] = (self.k.narrow(dim, s0, len(steps)), self.v.narrow(dim, s0, len(steps)))
            return got
        idx = torch.tensor(steps, device=self.k.device)
        return self.k.index_select(dim, idx), self.v.index_select(dim, idx)

    def as_reference_layout(self) -> Tensor | None:
        """``[n_steps, 2 (k, v), h*w, window, C]`` (a copy), the reference's layout."""
        if self.k is None:
            return None
        if self.kernel == "vector":  # [h, w, d, s, hw] -> [s, hw, w, h, d]
            k, v = (t.permute(3, 4, 1, 0, 2) for t in (self.k, self.v))
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
        self.kv = self.k = self.v = None
        self._views = {}
        self.heads = self.head_dim = self.hw = 0

    @property
    def nbytes(self) -> int:
        if self.k is None:
            return 0
        if self.kv is not None:
            return self.kv.numel() * self.kv.element_size()
        return sum(t.numel() * t.element_size() for t in (self.k, self.v))
