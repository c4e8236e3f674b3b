"""Uni-directional temporal attention for diffusers' motion modules, driven by a KV-cache.

:func:`install_stream_attention` patches a ``UNetMotionModel`` in place, without copying diffusers' code:

* each motion module's ``GroupNorm`` normalises **per frame** (:class:`FrameGroupNorm`). Diffusers' AnimateDiff
  block normalises over all frames of the call at once, which would let later frames leak into earlier ones and
  make a one-frame streaming call differ from a multi-frame pass; the reference (and the original AnimateDiff)
  normalise per frame.
* each temporal ``BasicTransformerBlock.pos_embed`` becomes :class:`DeferredPositionalEmbedding`: it keeps the
  sinusoidal table (same state-dict key) but no longer adds it to the hidden states. The attention processor adds
  the projected position terms itself (``W·(x+pe) = W·x + W·pe``, exact because the projections have no bias), so
  the cache can hold ``W·x`` and re-position frames as the window slides.
* both temporal self-attentions of every motion block get a :class:`StreamTemporalAttnProcessor`, all sharing one
  :class:`TemporalAttentionState` that the pipeline switches between modes through the returned
  :class:`StreamAttentionController`:

  - ``full`` (default): attention among the frames of the call, positions ``0..F-1``, optional additive mask
    ``[F, F]``; optionally writes the frames' keys/values into the warmup slots of one denoising step's cache
    (warmup). With no mask this is plain AnimateDiff.
  - ``stream``: each batch row is one frame at its own denoising step (the stream batch); it writes its keys and
    values into that step's cache and attends to the step's warmup frames + ring (itself included).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from live2diff.kv_cache import LayerKVCache, ReferenceSlotIndex, SlotIndex, resolve_kernel

#: how the cache slots of a stream call are chosen: ``clean`` (:class:`SlotIndex`: rows hold frames only) or
#: ``reference`` (:class:`ReferenceSlotIndex`: the reference's bookkeeping, for a stream batch full from the start)
BOOKKEEPING = {"clean": SlotIndex, "reference": ReferenceSlotIndex}


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm applied to each frame of a ``[B, C, F, H, W]`` tensor on its own (same parameters as GroupNorm)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            return super().forward(x)
        b, c, f, h, w = x.shape
        y = F.group_norm(
            x.transpose(1, 2).reshape(b * f, c, h, w), self.num_groups, self.weight, self.bias, self.eps
        )
        return y.reshape(b, f, c, h, w).transpose(1, 2)


class DeferredPositionalEmbedding(nn.Module):
    """Holds the sinusoidal table ``pe`` (state-dict compatible) but leaves the hidden states untouched: the
    stream processor adds ``W·pe`` at attention time instead."""

    def __init__(self, pe: Tensor):
        super().__init__()
        self.register_buffer("pe", pe.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return x


@dataclass
class TemporalAttentionState:
    """What the next UNet call's temporal attentions should do (set by :class:`StreamAttentionController`).

    Stream mode's index tensors (slot positions, query positions, validity bias) are built by the controller once
    per call, not per layer, and memoised by the ring's state: the ring cycles through ``window - warmup`` states,
    so in steady state no call builds a tensor or copies one to the device."""

    mode: str = "full"
    full_mask: Tensor | None = None  # additive [F, F]
    write_step: int | None = None  # full mode: store keys/values as this step's warmup frames
    steps: list[int] = field(default_factory=list)  # stream mode: denoising step of each batch row
    write_slots: list[int] = field(default_factory=list)
    host: tuple[Tensor, ...] | None = (
        None  # slot pos [nb, L], query pos [nb], valid [nb, L], steps, write slots
    )
    key: tuple | None = None  # memo key of `host`
    key_id: int = -1  # a small integer naming `key` (cheap to look up once per layer)
    key_ids: dict = field(default_factory=dict)
    aligned: bool = False  # stream mode: consecutive steps, one write slot (one slice write per layer)
    # stream mode, known on the host (no device read): every row at the same slot positions / query position,
    # every slot filled
    same_pos: bool = False
    same_qpos: bool = False
    all_valid: bool = False
    memo: dict = field(default_factory=dict)
    _current: tuple | None = None
    # capture mode (:meth:`StreamAttentionController.capture`): the processors read only ``static`` — the same
    # tensors every call, rewritten in place before the UNet call — and no Python value that changes per call, so
    # one steady stream call compiles to one graph (``torch.compile(fullgraph=True)``, CUDA graphs) and replays it
    capture: bool = False
    static: tuple[Tensor, ...] | None = None  # like :meth:`tensors`: pos [nb, L], qpos, bias, steps, slots

    def tensors(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """``(slot positions [nb, L], query positions [nb], additive bias [nb, L], steps [nb], write slots [nb])``
        on ``device`` (capture mode: the static tensors holding them)."""
        if self.capture:
            return self.static
        return self.tensors_eager(device, dtype)

    def tensors_eager(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
        cur = self._current
        if cur is not None and cur[0] is self.key and cur[1] == device and cur[2] == dtype:
            return cur[3]
        mkey = (self.key, device, dtype)
        out = self.memo.get(mkey)
        if out is None:
            host = self.host if self.host is not None else self.memo[(self.key, "host")]
            if len(self.memo) > 512:  # bounded: a long stream cycles through few ring states
                self.memo.clear()
            pos, qpos, valid, steps, slots = self.memo[(self.key, "host")] = host
            bias = torch.zeros(valid.shape, dtype=dtype).masked_fill_(~valid, float("-inf"))
            out = self.memo[mkey] = tuple(t.to(device) for t in (pos, qpos, bias, steps, slots))
        self._current = (self.key, device, dtype, out)
        return out


def _dropout(attn, x: Tensor) -> Tensor:
    """``attn.to_out[1]`` (dropout), skipped when it is the identity (inference): one module call less per layer."""
    drop = attn.to_out[1]
    return drop(x) if drop.training and drop.p > 0 else x


class StreamTemporalAttnProcessor:
    """Processor for one temporal self-attention layer (``attn1`` or ``attn2`` of a motion block).

    On the CPU both modes project ``q``, ``k``, ``v`` with one matrix product by a cached ``[3C, C]`` copy of the
    three weights, the query's rows pre-multiplied by the attention scale (refreshed when a weight changes); other
    devices keep three projections (no extra copy of the weights in GPU memory)."""

    def __init__(
        self,
        state: TemporalAttentionState,
        cache: LayerKVCache,
        pos_module: DeferredPositionalEmbedding,
        attn: nn.Module | None = None,
    ):
        self.state, self.cache, self.pos_module = state, cache, pos_module
        self.attn = attn  # the layer it serves (capture mode prepares it before the UNet call)
        self._key: tuple | None = None
        self._pe_proj: tuple[Tensor, Tensor, Tensor] | None = None
        self._fused: Tensor | None = None  # CPU: [W_q * scale; W_k; W_v]
        self._q_pe_scaled: Tensor | None = None
        self._memo: dict = {}  # vector kernel: this layer's position operands per ring state

    def _prepare(self, attn: nn.Module, like: Tensor) -> None:
        """``W·pe`` of the three projections (``[max_len, C]`` each) and, on the CPU, the fused weights; rebuilt
        only when a weight changes (new tensor or in-place update), the device or the dtype."""
        ws = (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight)
        key = (like.device, like.dtype, ws[0]._version, ws[1]._version, ws[2]._version, *map(id, ws))
        if key == self._key:
            return
        pe = self.pos_module.pe[0].to(like.device, like.dtype)
        self._pe_proj = tuple(F.linear(pe, w.to(like.dtype)) for w in ws)
        self._memo.clear()
        if like.device.type == "cpu" or resolve_kernel(self.cache.requested, like.device) == "vector":
            for lin in (attn.to_q, attn.to_k, attn.to_v):
                if type(lin) is not nn.Linear:
                    raise TypeError(
                        f"temporal attention projection is a {type(lin).__name__}, not a plain nn.Linear: fuse "
                        "adapter (LoRA) weights into the base weights before streaming"
                    )
            self._fused = torch.cat([ws[0] * attn.scale, ws[1], ws[2]]).to(like.device, like.dtype)
            self._q_pe_scaled = self._pe_proj[0] * attn.scale
        else:
            self._fused = self._q_pe_scaled = None
        self._key = key

    def projected_pe(self, attn: nn.Module, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(W_q·pe, W_k·pe, W_v·pe)``, each ``[max_len, C]``; recomputed only when weights change."""
        self._prepare(attn, like)
        return self._pe_proj

    def __call__(
        self, attn, hidden_states: Tensor, encoder_hidden_states=None, attention_mask=None, **kwargs
    ):
        if encoder_hidden_states is not None:
            raise ValueError("temporal attention is self-attention; got encoder_hidden_states")
        st = self.state
        if not torch.compiler.is_compiling():  # compiled: prepared by the controller (weight versions are host state)
            self._prepare(attn, hidden_states)
        if st.mode == "full":
            out = self._full(attn, hidden_states)
        elif st.mode == "stream":
            if resolve_kernel(self.cache.requested, hidden_states.device) == "vector":
                return self._stream_vector(attn, hidden_states)
            out = self._stream_sdpa(attn, hidden_states)
        else:
            raise ValueError(f"unknown temporal attention mode '{st.mode}'")
        out = attn.to_out[0](out)
        return _dropout(attn, out)

    def _heads(self, x: Tensor, heads: int) -> Tensor:
        *lead, n, c = x.shape
        return x.reshape(*lead, n, heads, c // heads).transpose(-3, -2)  # [..., heads, n, d]

    def _unheads(self, x: Tensor) -> Tensor:
        *lead, h, n, d = x.shape
        return x.transpose(-3, -2).reshape(*lead, n, h * d)

    def _full(self, attn, x: Tensor) -> Tensor:
        st = self.state
        q_pe, k_pe, v_pe = self._pe_proj
        n_rows, f, c = x.shape
        if f > q_pe.shape[0]:
            raise ValueError(f"{f} frames exceed the motion module's {q_pe.shape[0]} positions")
        h = attn.heads
        if self._fused is not None:  # q comes pre-scaled
            qkv = F.linear(x, self._fused)
            q, k, v, scale = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :], 1.0
            q_pe = self._q_pe_scaled
        else:
            q, k, v, scale = attn.to_q(x), attn.to_k(x), attn.to_v(x), attn.scale
        if st.write_step is not None:
            self.cache.ensure(n_rows, h, c // h, k.device, k.dtype)
            self.cache.write(st.write_step, slice(0, f), k, v)
        q, k, v = q + q_pe[:f], k + k_pe[:f], v + v_pe[:f]
        mask = None if st.full_mask is None else st.full_mask.to(q.device, q.dtype)
        o = F.scaled_dot_product_attention(
            self._heads(q, h), self._heads(k, h), self._heads(v, h), attn_mask=mask, scale=scale
        )
        return self._unheads(o)

    def _rows(self, attn, x: Tensor) -> tuple[int, int, int, int, int]:
        n_rows, f, c = x.shape
        nb = len(self.state.steps)
        if f != 1 or n_rows % nb:
            raise ValueError(
                f"stream mode expects one frame per batch row; got {f} frames, {n_rows} rows, {nb} steps"
            )
        return n_rows, nb, n_rows // nb, attn.heads, c

    def _stream_vector(self, attn, x: Tensor) -> Tensor:
        """Each row's query against its step's cache (itself included, written first), (row, pixel) innermost.

        One matrix product gives ``q``, ``k``, ``v`` already in the cache's layout (``W [3C, C] @ x^T``: channels
        by (row, pixel)), the query's position term added by the same call (``addmm``'s bias); the call's keys and
        values go into the cache with one slice assignment. Keys and values are cached as ``W·x``: their position
        terms, per slot and shared by all pixels, enter as a ``[L, d] @ [d, rows*h*w]`` product added to the
        scores and a ``[d, L] @ [L, rows*h*w]`` product added to the output, with operands built once per ring
        state and layer (:meth:`_position_operands`); the output projection reads the result transposed (no
        copy)."""
        st = self.state
        n_rows, nb, hw, h, c = self._rows(attn, x)
        d = c // h
        cache = self.cache
        cache.ensure(hw, h, d, x.device, x.dtype)
        if st.capture:
            return self._stream_vector_static(attn, x, n_rows, nb, hw, h, c)
        q_bias, q_add, kpe, vpe, bias = self._position_operands(attn, nb, h, d)
        qkv = torch.addmm(q_bias, self._fused, x.view(n_rows, c).t()).view(3, h, d, nb, hw)
        q = qkv[0]  # [h, d, nb, hw]
        if q_add is not None:  # rows at different positions (not in steady state)
            q = q + q_add
        cache.write_call(st.steps, st.write_slots, qkv[1:], st.aligned)
        keys, values = cache.steps_view(st.steps)  # [h, L, d, nb, hw]
        L = keys.shape[1]
        scores = (keys * q[:, None]).sum(2)  # [h, L, nb, hw]
        if kpe.dim() == 3:  # one position row for all steps: + q · W_k pe[pos]
            scores.view(h, L, nb * hw).baddbmm_(kpe, q.reshape(h, d, nb * hw))
        else:  # [nb, h, L, d]: per step
            scores += torch.einsum("nhld,hdnp->hlnp", kpe, q)
        if bias is not None:  # empty slots (a ring still filling)
            scores += bias
        w = scores.softmax(1)
        out = (values * w[:, :, None]).sum(1)  # [h, d, nb, hw]
        if vpe.dim() == 3:  # + sum_j w_j W_v pe[pos_j]
            out.view(h, d, nb * hw).baddbmm_(vpe, w.view(h, L, nb * hw))
        else:
            out += torch.einsum("nhdl,hlnp->hdnp", vpe, w)
        out = attn.to_out[0](out.view(c, n_rows).t())  # [nb*hw, C]
        return _dropout(attn, out.view(n_rows, 1, c))

    def _stream_vector_static(self, attn, x: Tensor, n_rows: int, nb: int, hw: int, h: int, c: int) -> Tensor:
        """The vector kernel over the state's static tensors only (capture mode): every row's slot positions, query
        position, write slot and empty-slot bias are read from device tensors, so the same code (and the same
        compiled graph) serves every ring state; the position operands are gathered per call instead of memoised."""
        pos, qpos, bias, steps, slots = self.state.static
        d = c // h
        _, k_pe, v_pe = self._pe_proj
        L = pos.shape[1]
        qkv = torch.mm(self._fused, x.view(n_rows, c).t()).view(3, h, d, nb, hw)
        q = qkv[0] + self._q_pe_scaled[qpos].t().reshape(h, d, nb, 1)  # [h, d, nb, hw]
        self.cache.write_rows_vector(steps, slots, qkv[1:])
        keys, values = self.cache.steps_view(self.state.steps)  # [h, L, d, nb, hw]
        kpe = k_pe[pos].reshape(nb, L, h, d).permute(0, 2, 1, 3)  # [nb, h, L, d]
        vpe = v_pe[pos].reshape(nb, L, h, d).permute(0, 2, 3, 1)  # [nb, h, d, L]
        scores = (keys * q[:, None]).sum(2) + torch.einsum("nhld,hdnp->hlnp", kpe, q)
        w = (scores + bias.t().reshape(1, L, nb, 1)).softmax(1)  # [h, L, nb, hw]
        out = (values * w[:, :, None]).sum(1) + torch.einsum("nhdl,hlnp->hdnp", vpe, w)
        out = attn.to_out[0](out.reshape(c, n_rows).t())  # [nb*hw, C]
        return attn.to_out[1](out.view(n_rows, 1, c))

    def _position_operands(self, attn, nb: int, h: int, d: int) -> tuple:
        """``(q bias [3C, 1] or 0, per-row q term [h, d, nb, 1] or None, W_k pe[pos] [h, L, d] (or [nb, h, L, d]
        when the steps' positions differ), (W_v pe[pos])^T [h, d, L] (or [nb, h, d, L]), additive slot bias
        [1, L, nb, 1] or None)`` for the current ring state: built on the first call in that state, then reused
        (the ring cycles through ``window - warmup`` states)."""
        st = self.state
        got = self._memo.get(st.key_id)
        if got is not None:
            return got
        pos, qpos, bias, _, _ = st.tensors(self._fused.device, self._fused.dtype)
        _, k_pe, v_pe = self._pe_proj
        L, c = pos.shape[1], h * d
        if st.same_pos:
            pos = pos[:1]
        kpe = k_pe[pos].reshape(-1, L, h, d).permute(0, 2, 1, 3).contiguous()  # [n, h, L, d]
        vpe = v_pe[pos].reshape(-1, L, h, d).permute(0, 2, 3, 1).contiguous()  # [n, h, d, L]
        if kpe.shape[0] == 1:
            kpe, vpe = kpe[0], vpe[0]
        q_pe = self._q_pe_scaled[qpos]  # [nb, C]
        q_bias = torch.zeros(3 * c, 1, dtype=q_pe.dtype, device=q_pe.device)
        q_add = None
        if st.same_qpos:
            q_bias[:c, 0] = q_pe[0]
        else:
            q_add = q_pe.t().reshape(h, d, nb, 1)
        slot_bias = None if st.all_valid else bias.t().reshape(1, L, nb, 1)
        if len(self._memo) > 64:  # bounded: a stream cycles through few ring states
            self._memo.clear()
        got = self._memo[st.key_id] = (q_bias, q_add, kpe, vpe, slot_bias)
        return got

    def _stream_sdpa(self, attn, x: Tensor) -> Tensor:
        """``scaled_dot_product_attention`` over the cache as a view (``keys`` ``[nb, hw, h, L, d]``); the key
        position term rides in the additive mask, the one-hot value columns return the weights for the value term."""
        st = self.state
        n_rows, nb, hw, h, c = self._rows(attn, x)
        d = c // h
        q_pe, k_pe, v_pe = self._pe_proj
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)  # [N, 1, C]
        cache = self.cache
        cache.ensure(hw, h, d, k.device, k.dtype)
        pos, qpos, bias, steps, slots = st.tensors(q.device, q.dtype)
        cache.write_rows(steps, slots, k, v)  # in place, each row into its step's slot
        keys, values = cache.steps_view(st.steps)
        L = pos.shape[1]
        kpe = k_pe[pos].reshape(nb, L, h, d).transpose(1, 2)  # [nb, h, L, d]
        vpe = v_pe[pos].reshape(nb, L, h, d).transpose(1, 2)  # [nb, h, L, d]
        q = (q.reshape(nb, hw, c) + q_pe[qpos][:, None, :]).reshape(nb, hw, h, d)
        mask = torch.matmul(q.transpose(1, 2), kpe.transpose(2, 3))  # [nb, h, hw, L]
        mask = (mask * attn.scale + bias.view(nb, 1, 1, L)).transpose(1, 2).reshape(nb * hw, h, 1, L)
        o = F.scaled_dot_product_attention(
            q.reshape(nb * hw, h, 1, d),
            keys.reshape(nb * hw, h, L, d),
            values.reshape(nb * hw, h, L, d + L),
            attn_mask=mask,
            scale=attn.scale,
        ).reshape(nb, hw, h, d + L)
        w = o[..., d:].transpose(1, 2)  # [nb, h, hw, L] attention weights per slot
        return (o[..., :d] + torch.matmul(w, vpe).transpose(1, 2)).reshape(n_rows, 1, c)


class StreamAttentionController:
    """Switches every temporal attention of one UNet between full / stream mode and owns their caches."""

    def __init__(
        self,
        state,
        processors: list[StreamTemporalAttnProcessor],
        n_steps: int,
        window: int,
        warmup: int,
        bookkeeping: str = "clean",
    ):
        if bookkeeping not in BOOKKEEPING:
            raise ValueError(f"bookkeeping must be one of {sorted(BOOKKEEPING)}, got '{bookkeeping}'")
        self.state, self.processors = state, processors
        self.index = BOOKKEEPING[bookkeeping](n_steps, window, warmup)
        self.window, self.warmup, self.n_steps = window, warmup, n_steps

    # -- modes -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def full(
        self, mask: Tensor | None = None, write_step: int | None = None, n_frames: int | None = None
    ) -> Iterator[None]:
        """Attention among the call's frames; with ``write_step``, their keys/values become that step's warmup."""
        if write_step is not None:
            if n_frames is None:
                raise ValueError("write_step needs n_frames")
            self.index.set_warmup(write_step, n_frames)
        self.state.mode, self.state.full_mask, self.state.write_step = "full", mask, write_step
        try:
            yield
        finally:
            self._clear()

    @contextlib.contextmanager
    def stream(self, steps: Sequence[int]) -> Iterator[None]:
        """One frame per batch row, row ``i`` at denoising step ``steps[i]`` (distinct steps)."""
        steps = [int(s) for s in steps]
        if len(set(steps)) != len(steps):
            raise ValueError(f"stream rows must be at distinct steps, got {steps}")
        slots = self.index.advance_all(steps)
        pos_rows, valid_rows, qpos = [], [], []
        for s, slot in zip(steps, slots):
            pos, valid = self.index.positions(s)
            pos_rows.append(tuple(pos))
            valid_rows.append(tuple(valid))
            qpos.append(pos[slot])
        st = self.state
        st.mode, st.steps, st.write_slots = "stream", steps, slots
        st.key = (tuple(pos_rows), tuple(valid_rows), tuple(qpos), tuple(steps), tuple(slots))
        if len(st.key_ids) > 512:
            st.key_ids.clear()
            for p in self.processors:
                p._memo.clear()
        st.key_id = st.key_ids.setdefault(st.key, len(st.key_ids))
        st.aligned = slots.count(slots[0]) == len(slots) and steps == list(
            range(steps[0], steps[0] + len(steps))
        )
        st.same_pos = all(p == pos_rows[0] for p in pos_rows)
        st.same_qpos = all(q == qpos[0] for q in qpos)
        st.all_valid = all(all(v) for v in valid_rows)
        st.host = (
            None
            if (st.key, "host") in st.memo
            else (
                torch.tensor(pos_rows, dtype=torch.long),
                torch.tensor(qpos, dtype=torch.long),
                torch.tensor(valid_rows, dtype=torch.bool),
                torch.tensor(steps, dtype=torch.long),
                torch.tensor(slots, dtype=torch.long),
            )
        )
        if st.capture:
            self._stage(len(steps))
        try:
            yield
        finally:
            self._clear()
            self.index.end_call(steps)

    # -- capture mode ----------------------------------------------------------------------------------------
    def capture(self, on: bool = True) -> None:
        """Capture mode: each stream call's index tensors are written in place into static tensors (allocated
        once per batch size, marked as static addresses for CUDA graphs) that the processors read, and the
        processors' weight-derived operands are refreshed here, before the UNet call, not inside it. A steady
        stream call then has no Python value that changes from call to call: ``torch.compile(unet,
        fullgraph=True)`` traces it once and replays it for every ring state."""
        self.state.capture = bool(on)
        self._static = {}

    def _stage(self, nb: int) -> None:
        w = self.processors[0].attn.to_q.weight
        for p in self.processors:
            p._prepare(p.attn, w)
        st = self.state
        src = st.tensors_eager(w.device, w.dtype)
        key = (nb, w.device, w.dtype)
        static = self._static.get(key)
        if static is None:
            static = tuple(t.clone() for t in src)
            for t in static:
                torch._dynamo.mark_static_address(t)
            self._static[key] = static
        else:
            for dst, t in zip(static, src):
                dst.copy_(t)
        st.static = static
        for p in self.processors:  # the storage the compiled call writes in place (CUDA graphs: fixed addresses)
            for t in (p.cache.kv, p.cache.k, p.cache.v):
                if t is not None and not hasattr(t, "_dynamo_static_input_type"):
                    torch._dynamo.mark_static_address(t)

    def ready(self) -> bool:
        """Every layer's cache has its storage (allocated by the first call that writes it): a call that would
        allocate one is not a steady call, and is not run compiled."""
        return all(p.cache.k is not None for p in self.processors)

    def _clear(self) -> None:
        st = self.state
        st.mode, st.full_mask, st.write_step = "full", None, None
        st.steps, st.write_slots = [], []

    # -- state -----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream (new video): slot bookkeeping and cache storage."""
        self.index.reset()
        for p in self.processors:
            p.cache.clear()

    def cache_bytes(self) -> int:
        return sum(p.cache.nbytes for p in self.processors)

    def cache_shapes(self) -> list[tuple[int, ...]]:
        """Per layer, in the reference's layout ``[n_steps, 2, h*w, window, C]``."""
        return [p.cache.reference_shape for p in self.processors if p.cache.k is not None]


def causal_warmup_mask(
    n_frames: int, warmup: int, window: int | None = None, device=None, dtype=torch.float32
) -> Tensor:
    """Additive ``[F, F]`` mask of the training setup: the warmup block attends bidirectionally within itself, each
    later frame attends to the warmup frames and causally to earlier frames (within ``window`` keys if given)."""
    i = torch.arange(n_frames)[:, None]
    j = torch.arange(n_frames)[None, :]
    allowed = j <= i
    w = min(warmup, n_frames)
    allowed[:w, :w] = True
    if window is not None:
        recent = window - warmup
        allowed &= (j < warmup) | (j > i - recent)
    mask = torch.zeros(n_frames, n_frames, dtype=dtype, device=device)
    return mask.masked_fill(~allowed.to(device), float("-inf"))


def use_frame_groupnorm(tm: nn.Module) -> None:
    """Give a motion module a :class:`FrameGroupNorm` in place of its GroupNorm (same parameters; no-op if done)."""
    if not isinstance(tm.norm, FrameGroupNorm):
        old = tm.norm
        new = FrameGroupNorm(old.num_groups, old.num_channels, eps=old.eps, affine=old.affine)
        new.load_state_dict(old.state_dict())
        tm.norm = new.to(old.weight.device, old.weight.dtype)


def temporal_blocks(unet: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, AnimateDiffTransformer3D)`` for every motion module of a ``UNetMotionModel``."""
    for name, module in unet.named_modules():
        if type(module).__name__ == "AnimateDiffTransformer3D":
            yield name, module


def install_stream_attention(
    unet: nn.Module,
    n_steps: int,
    window: int = 16,
    warmup: int = 8,
    kernel: str = "auto",
    bookkeeping: str = "clean",
) -> StreamAttentionController:
    """Patch ``unet`` (a diffusers ``UNetMotionModel``) in place and return the controller of its temporal attention.

    ``kernel`` is how a streaming query reads its cache (:class:`~live2diff.kv_cache.LayerKVCache`): ``vector``
    (elementwise, pixels innermost: fastest on CPU), ``sdpa`` (``scaled_dot_product_attention`` over a view of the
    cache: GPUs) or ``auto`` (``vector`` on CPU, ``sdpa`` elsewhere). Both compute the same attention.
    ``bookkeeping`` (:data:`BOOKKEEPING`) chooses the slots, positions and visibility of a stream call's rows."""
    state = TemporalAttentionState()
    processors: list[StreamTemporalAttnProcessor] = []
    max_len = None
    for _, tm in temporal_blocks(unet):
        use_frame_groupnorm(tm)
        for block in tm.transformer_blocks:
            if block.pos_embed is None:
                raise ValueError(
                    "motion module block without positional embedding; not an AnimateDiff motion module"
                )
            if not isinstance(block.pos_embed, DeferredPositionalEmbedding):
                block.pos_embed = DeferredPositionalEmbedding(block.pos_embed.pe)
            max_len = block.pos_embed.pe.shape[1]
            for attn in (block.attn1, block.attn2):
                if attn is None:
                    continue
                if (
                    getattr(attn.to_k, "bias", None) is not None
                    or getattr(attn.to_q, "bias", None) is not None
                ):
                    raise ValueError("temporal attention projections with bias: W·pe cannot be deferred")
                proc = StreamTemporalAttnProcessor(
                    state, LayerKVCache(n_steps, window, kernel), block.pos_embed, attn
                )
                attn.set_processor(proc)
                processors.append(proc)
    if not processors:
        raise ValueError("no motion modules found in the UNet")
    if window > max_len:
        raise ValueError(
            f"window {window} exceeds the motion module's {max_len} positions (motion_max_seq_length)"
        )
    return StreamAttentionController(state, processors, n_steps, window, warmup, bookkeeping)
