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

from live2diff.kv_cache import LayerKVCache, SlotIndex


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
    memo: dict = field(default_factory=dict)
    _current: tuple | None = None

    def tensors(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """``(slot positions [nb, L], query positions [nb], additive bias [nb, L], steps [nb], write slots [nb],
        steps * L + write slots [nb])`` on ``device``."""
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
            flat = steps * pos.shape[1] + slots
            out = self.memo[mkey] = tuple(t.to(device) for t in (pos, qpos, bias, steps, slots, flat))
        self._current = (self.key, device, dtype, out)
        return out


class StreamTemporalAttnProcessor:
    """Processor for one temporal self-attention layer (``attn1`` or ``attn2`` of a motion block)."""

    def __init__(
        self, state: TemporalAttentionState, cache: LayerKVCache, pos_module: DeferredPositionalEmbedding
    ):
        self.state, self.cache, self.pos_module = state, cache, pos_module
        self._pe_key: tuple | None = None
        self._pe_proj: tuple[Tensor, Tensor, Tensor] | None = None

    def projected_pe(self, attn: nn.Module, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(W_q·pe, W_k·pe, W_v·pe)``, each ``[max_len, C]``; recomputed only when weights change."""
        ws = (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight)
        key = (like.device, like.dtype, ws[0]._version, ws[1]._version, ws[2]._version, *map(id, ws))
        if key != self._pe_key:
            pe = self.pos_module.pe[0].to(like.device, like.dtype)
            self._pe_proj = tuple(F.linear(pe, w.to(like.dtype)) for w in ws)
            self._pe_key = key
        return self._pe_proj

    @torch.compiler.disable  # Python state that changes every call: a graph break, not a recompile per call
    def __call__(
        self, attn, hidden_states: Tensor, encoder_hidden_states=None, attention_mask=None, **kwargs
    ):
        if encoder_hidden_states is not None:
            raise ValueError("temporal attention is self-attention; got encoder_hidden_states")
        st = self.state
        q_pe, k_pe, v_pe = self.projected_pe(attn, hidden_states)
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)  # [N, F, C]
        if st.mode == "full":
            out = self._full(attn, q, k, v, q_pe, k_pe, v_pe)
        elif st.mode == "stream":
            out = self._stream(attn, q, k, v, q_pe, k_pe, v_pe)
        else:
            raise ValueError(f"unknown temporal attention mode '{st.mode}'")
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    def _heads(self, x: Tensor, heads: int) -> Tensor:
        *lead, n, c = x.shape
        return x.reshape(*lead, n, heads, c // heads).transpose(-3, -2)  # [..., heads, n, d]

    def _unheads(self, x: Tensor) -> Tensor:
        *lead, h, n, d = x.shape
        return x.transpose(-3, -2).reshape(*lead, n, h * d)

    def _full(self, attn, q, k, v, q_pe, k_pe, v_pe) -> Tensor:
        st = self.state
        n_rows, f, c = q.shape
        if f > q_pe.shape[0]:
            raise ValueError(f"{f} frames exceed the motion module's {q_pe.shape[0]} positions")
        h = attn.heads
        if st.write_step is not None:
            self.cache.ensure(n_rows, h, c // h, k.device, k.dtype)
            self.cache.write(st.write_step, slice(0, f), k, v)
        q, k, v = q + q_pe[:f], k + k_pe[:f], v + v_pe[:f]
        mask = None if st.full_mask is None else st.full_mask.to(q.device, q.dtype)
        o = F.scaled_dot_product_attention(
            self._heads(q, h), self._heads(k, h), self._heads(v, h), attn_mask=mask
        )
        return self._unheads(o)

    def _stream(self, attn, q, k, v, q_pe, k_pe, v_pe) -> Tensor:
        """Each row's query against its step's cache (itself included, written first). Keys and values are cached
        as ``W·x``; their position terms are per slot and shared by all h*w pixels, so they enter as a ``[nb, L]``
        term of the scores (``q·W_k pe``) and a weighted sum of ``W_v pe`` rows, never broadcast into the cache."""
        st = self.state
        n_rows, f, c = q.shape
        nb = len(st.steps)
        if f != 1 or n_rows % nb:
            raise ValueError(
                f"stream mode expects one frame per batch row; got {f} frames, {n_rows} rows, {nb} steps"
            )
        hw, h = n_rows // nb, attn.heads
        d = c // h
        cache = self.cache
        cache.ensure(hw, h, d, k.device, k.dtype)
        pos, qpos, bias, steps, slots, flat = st.tensors(q.device, q.dtype)
        cache.write_rows(steps, slots, flat, k, v)  # in place, each row into its step's slot
        keys, values = cache.steps_view(st.steps)
        L = pos.shape[1]
        kpe = k_pe[pos].reshape(nb, L, h, d).transpose(1, 2)  # [nb, h, L, d]
        vpe = v_pe[pos].reshape(nb, L, h, d).transpose(1, 2)  # [nb, h, L, d]
        q = (q.reshape(nb, hw, c) + q_pe[qpos][:, None, :]).reshape(nb, hw, h, d)
        if cache.kernel == "vector":
            return self._stream_vector(attn, q, keys, values, kpe, vpe, bias).reshape(n_rows, 1, c)
        return self._stream_sdpa(attn, q, keys, values, kpe, vpe, bias).reshape(n_rows, 1, c)

    @staticmethod
    def _stream_vector(attn, q, keys, values, kpe, vpe, bias) -> Tensor:
        """Pixels innermost (``keys`` ``[nb, L, h, d, hw]``): elementwise passes over contiguous memory."""
        nb, hw, h, d = q.shape
        L = keys.shape[1]
        qv = q.permute(0, 2, 3, 1).contiguous()  # [nb, h, d, hw]
        scores = (keys * qv[:, None]).sum(3)  # [nb, L, h, hw]
        scores += torch.matmul(kpe, qv).transpose(1, 2)  # position term of the keys
        w = scores.mul_(attn.scale).add_(bias.view(nb, L, 1, 1)).softmax(1)
        out = (values * w[:, :, :, None]).sum(1)  # [nb, h, d, hw]
        out += torch.matmul(vpe.transpose(2, 3), w.transpose(1, 2))  # position term of the values
        return out.permute(0, 3, 1, 2)  # [nb, hw, h, d]

    @staticmethod
    def _stream_sdpa(attn, q, keys, values, kpe, vpe, bias) -> Tensor:
        """``scaled_dot_product_attention`` over the cache as a view (``keys`` ``[nb, hw, h, L, d]``); the key
        position term rides in the additive mask, the one-hot value columns return the weights for the value term."""
        nb, hw, h, d = q.shape
        L = keys.shape[3]
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
        return o[..., :d] + torch.matmul(w, vpe).transpose(1, 2)


class StreamAttentionController:
    """Switches every temporal attention of one UNet between full / stream mode and owns their caches."""

    def __init__(
        self, state, processors: list[StreamTemporalAttnProcessor], n_steps: int, window: int, warmup: int
    ):
        self.state, self.processors = state, processors
        self.index = SlotIndex(n_steps, window, warmup)
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
        slots, pos_rows, valid_rows, qpos = [], [], [], []
        for s in steps:
            slot = self.index.advance(s)
            pos, valid = self.index.positions(s)
            slots.append(slot)
            pos_rows.append(tuple(pos))
            valid_rows.append(tuple(valid))
            qpos.append(pos[slot])
        st = self.state
        st.mode, st.steps, st.write_slots = "stream", steps, slots
        st.key = (tuple(pos_rows), tuple(valid_rows), tuple(qpos), tuple(steps), tuple(slots))
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
        try:
            yield
        finally:
            self._clear()

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


def temporal_blocks(unet: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, AnimateDiffTransformer3D)`` for every motion module of a ``UNetMotionModel``."""
    for name, module in unet.named_modules():
        if type(module).__name__ == "AnimateDiffTransformer3D":
            yield name, module


def install_stream_attention(
    unet: nn.Module, n_steps: int, window: int = 16, warmup: int = 8, kernel: str = "auto"
) -> StreamAttentionController:
    """Patch ``unet`` (a diffusers ``UNetMotionModel``) in place and return the controller of its temporal attention.

    ``kernel`` is how a streaming query reads its cache (:class:`~live2diff.kv_cache.LayerKVCache`): ``vector``
    (elementwise, pixels innermost: fastest on CPU), ``sdpa`` (``scaled_dot_product_attention`` over a view of the
    cache: GPUs) or ``auto`` (``vector`` on CPU, ``sdpa`` elsewhere). Both compute the same attention."""
    state = TemporalAttentionState()
    processors: list[StreamTemporalAttnProcessor] = []
    max_len = None
    for _, tm in temporal_blocks(unet):
        if not isinstance(tm.norm, FrameGroupNorm):
            old = tm.norm
            new = FrameGroupNorm(old.num_groups, old.num_channels, eps=old.eps, affine=old.affine)
            new.load_state_dict(old.state_dict())
            tm.norm = new.to(old.weight.device, old.weight.dtype)
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
                    state, LayerKVCache(n_steps, window, kernel), block.pos_embed
                )
                attn.set_processor(proc)
                processors.append(proc)
    if not processors:
        raise ValueError("no motion modules found in the UNet")
    if window > max_len:
        raise ValueError(
            f"window {window} exceeds the motion module's {max_len} positions (motion_max_seq_length)"
        )
    return StreamAttentionController(state, processors, n_steps, window, warmup)
