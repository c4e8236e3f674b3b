"""StreamV2V (Liang et al., 2024; github.com/Jeff-LiangF/streamv2v) as a StreamMethod: StreamDiffusion's stream
batch plus a **feature bank** that carries appearance from earlier frames.

* **Extended self-attention**: in every spatial self-attention layer, the queries of each batch row attend to its
  own keys/values *and* to the banked keys/values of its denoising step.
* **Feature fusion**: in the layers named by ``fusion_layers`` (the reference: ``up_blocks.0``, ``up_blocks.1``,
  ``mid_block``), each output token is blended with its nearest banked output token when their cosine similarity
  reaches ``fusion_threshold``: ``out = (1 - s) * out + s * nearest``.
* **Bank update** (``bank_write``):

  - ``calls`` (default, the authors' code: ``CachedSTXFormersAttnProcessor``): every ``update_interval``-th *UNet
    call*, counted from the stream's first call (which writes), writes *all* the call's rows — row ``j`` is frame
    ``c - j`` at step ``j`` — into step ``j``'s bank. The stream batch is full from the first call, as the reference's
    zero-initialised stream buffer: steps ``1 .. n-1`` start as zero latents ("placeholder rows"), which are
    denoised like any row (and written into the bank at the first call), never emitted.
  - ``frames`` (this project's earlier rule, a named variant): every ``update_interval``-th *frame* is written at
    each of its steps; the batch grows from one row, no placeholder rows.

  ``update: fifo`` keeps the last ``bank_size`` writes (oldest evicted); ``update: tome`` (the reference's default)
  keeps one entry per layer and step and merges each write into it by random bipartite token merging (ToMe, ratio
  0.5), so it stays one frame's worth of tokens. Either way the bank is bounded: at most ``bank_size`` frames of
  tokens per layer and step. ToMe's random split is ``bank.draw(layer, step, key, n_tokens)`` (a permutation;
  ``key`` = the call number, or the frame index under ``frames``): by default a function of (seed, key, step,
  layer) — the reference draws it from torch's global RNG — and a differential test injects the reference's draws.
* **First frame repeated** (``first_frame_repeats``): the reference's vid2vid script pushes the first frame
  ``batch_size`` (= ``len(t_index_list)``) times before its loop; here the first ``push`` after ``prepare`` runs
  those UNet calls first (outputs discarded, time counted in that push), then the frame itself.

Everything is done by an attention processor on the diffusers UNet (no fork of its code).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.common import NOT_EMITTED, InFlight
from baselines.streamdiffusion import StreamDiffusion
from eval.interface import Emission
from live2diff.components import DEFAULT_T_INDEX_LIST

UPDATE_RULES = ("fifo", "tome")
BANK_WRITES = ("calls", "frames")


@dataclass
class BankEntry:
    keys: Tensor  # [N, C]
    values: Tensor  # [N, C]
    outputs: Tensor  # [N, C] self-attention outputs before fusion

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.outputs))


@dataclass
class FeatureBank:
    """Per (layer, denoising step): the banked entries of earlier frames."""

    size: int = 1
    update: str = "tome"
    seed: int = 0
    entries: dict[tuple[str, int], deque[BankEntry]] = field(default_factory=dict)
    # ToMe's random split: (layer, step, key, n_tokens) -> a permutation of n_tokens (None: seeded_permutation)
    draw: Callable[[str, int, int, int], Tensor] | None = None
    # set by the method before each UNet call, one item per batch row: its step, its draw key (the call number or
    # the frame index, per bank_write) and whether it is written
    steps: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    write: list[bool] = field(default_factory=list)

    def get(self, layer: str, step: int) -> deque[BankEntry]:
        return self.entries.get((layer, step), deque())

    def add(self, layer: str, step: int, entry: BankEntry, index: int) -> None:
        q = self.entries.setdefault((layer, step), deque(maxlen=self.size))
        if self.update == "tome" and q:
            old = q.pop()
            n = old.keys.shape[0] + entry.keys.shape[0]
            perm = (self.draw or self.seeded_permutation)(layer, step, index, n)
            entry = tome_merge(old, entry, perm)
        q.append(entry)

    def seeded_permutation(self, layer: str, step: int, index: int, n: int) -> Tensor:
        """The default split: a function of (seed, key, step, layer) only, so a stream is reproducible under its
        seed whatever ran before (the reference draws from torch's global RNG instead)."""
        g = torch.Generator().manual_seed(_key(self.seed, index, step, layer))
        return torch.randperm(n, generator=g)

    def clear(self) -> None:
        self.entries.clear()

    def max_entries(self) -> int:
        return max((len(q) for q in self.entries.values()), default=0)

    def nbytes(self) -> int:
        return sum(e.nbytes() for q in self.entries.values() for e in q)


def _key(*parts: Any) -> int:
    h = 0
    for p in parts:
        for ch in str(p):
            h = (h * 131 + ord(ch)) % (2**61 - 1)
        h = (h * 1_000_003 + 7) % (2**61 - 1)
    return h


def tome_nearest(keys: Tensor, perm: Tensor) -> Tensor:
    """ToMe's matching: for each src token (``perm``'s first half) the position, in dst (the second half, in
    ``perm``'s order), of its most cosine-similar token."""
    r = keys.shape[0] // 2
    metric = F.normalize(keys.float(), dim=-1)
    return (metric[perm[:r]] @ metric[perm[r:]].T).argmax(dim=-1)


def tome_merge(old: BankEntry, new: BankEntry, perm: Tensor, nearest: Tensor | None = None) -> BankEntry:
    """Random bipartite soft matching over the tokens of [old; new], keyed on the keys (the reference's
    ``random_bipartite_soft_matching``, ratio 0.5): ``perm``'s first half (src) is averaged into its most similar
    token of the second half (dst, in ``perm``'s order; ``nearest`` gives that match, default
    :func:`tome_nearest`); the dst tokens are the merged entry."""
    keys = torch.cat([old.keys, new.keys])
    values = torch.cat([old.values, new.values])
    outputs = torch.cat([old.outputs, new.outputs])
    n = keys.shape[0]
    if perm.shape != (n,):
        raise ValueError(
            f"tome_merge: the split must be a permutation of {n} tokens, got shape {tuple(perm.shape)}"
        )
    r = n // 2
    perm = perm.to(keys.device, torch.long)
    src, dst = perm[:r], perm[r:]
    nearest = tome_nearest(keys, perm) if nearest is None else nearest.to(keys.device, torch.long)

    def merge(x: Tensor) -> Tensor:
        idx = nearest[:, None].expand(-1, x.shape[1])
        return x[dst].scatter_reduce(0, idx, x[src], reduce="mean", include_self=True)

    return BankEntry(merge(keys), merge(values), merge(outputs))


def nearest_features(x: Tensor, bank: Tensor, threshold: float) -> Tensor:
    """Each token of ``x`` [N, C] replaced by its most cosine-similar token of ``bank`` [M, C] when the similarity
    reaches ``threshold`` (kept otherwise) — the reference's ``get_nn_feats``."""
    sim = F.normalize(x, dim=-1) @ F.normalize(bank, dim=-1).T
    best, idx = sim.max(dim=-1)
    return torch.where((best >= threshold)[:, None], bank[idx], x)


class FeatureBankAttnProcessor:
    """Self-attention over [own tokens ; banked tokens of earlier frames], then optional feature fusion."""

    def __init__(self, name: str, bank: FeatureBank, fuse: bool, strength: float, threshold: float) -> None:
        self.name, self.bank, self.fuse = name, bank, fuse
        self.strength, self.threshold = float(strength), float(threshold)

    def __call__(
        self,
        attn,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise RuntimeError("FeatureBankAttnProcessor is for self-attention layers without a mask")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        heads = attn.heads
        bsz = key.shape[0]
        banks = [self.bank.get(self.name, step) for step in self.bank.steps]
        o = self._attend(query, key, value, banks, heads)
        out = attn.to_out[1](attn.to_out[0](o))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor
        flat = out.flatten(2).transpose(1, 2) if input_ndim == 4 else out  # [B, N, C]
        fused = self._fuse(flat, banks) if self.fuse else flat
        for r in range(bsz):  # written after every row has read: a call never sees its own frames
            if self.bank.write[r]:
                entry = BankEntry(
                    key[r].detach().clone(), value[r].detach().clone(), flat[r].detach().clone()
                )
                self.bank.add(self.name, self.bank.steps[r], entry, self.bank.indices[r])
        if not self.fuse:
            return out
        return fused.transpose(1, 2).reshape(out.shape) if input_ndim == 4 else fused

    @staticmethod
    def _attend(
        query: Tensor, key: Tensor, value: Tensor, banks: list[deque[BankEntry]], heads: int
    ) -> Tensor:
        """Attention of each row over [its own tokens; its step's banked tokens] in batched calls: rows whose banks
        hold the same number of tokens share one call — in the steady state every step's bank is full, so that is
        ONE call for all rows; while the banks fill, one per distinct length (at most len(t_index_list)). Exact,
        unpadded: a row never attends to padding."""
        bsz = query.shape[0]
        lengths = [sum(e.keys.shape[0] for e in q) for q in banks]
        groups: dict[int, list[int]] = {}
        for r, n in enumerate(lengths):
            groups.setdefault(n, []).append(r)

        def split(t: Tensor) -> Tensor:
            return t.view(t.shape[0], -1, heads, t.shape[-1] // heads).transpose(1, 2)

        out = None
        for n, rows in groups.items():
            whole = len(rows) == bsz
            idx = None if whole else torch.tensor(rows, device=query.device)
            q, k, v = (t if whole else t.index_select(0, idx) for t in (query, key, value))
            if n:
                k = torch.cat([k, torch.stack([torch.cat([e.keys for e in banks[r]]) for r in rows])], dim=1)
                v = torch.cat(
                    [v, torch.stack([torch.cat([e.values for e in banks[r]]) for r in rows])], dim=1
                )
            o = F.scaled_dot_product_attention(split(q), split(k), split(v))
            o = o.transpose(1, 2).reshape(len(rows), -1, query.shape[-1]).to(query.dtype)
            if whole:
                return o
            if out is None:
                out = query.new_empty(query.shape)
            out[idx] = o
        return out

    def _fuse(self, flat: Tensor, banks: list[deque[BankEntry]]) -> Tensor:
        """Feature fusion for every row at once: ``x * (1 - s) + s * nearest`` (the reference's ``get_nn_feats``:
        the nearest banked output when its cosine similarity reaches the threshold, the token itself otherwise);
        rows whose bank is empty are left as they are."""
        bank_o, lengths = _padded([[e.outputs for e in q] for q in banks], flat)
        if bank_o is None:
            return flat
        uniform = len(set(lengths)) == 1  # the steady state: every row's bank equally full, no padding
        sim = F.normalize(flat, dim=-1) @ F.normalize(bank_o, dim=-1).transpose(1, 2)  # [B, N, M]
        if not uniform:
            valid = (
                torch.arange(bank_o.shape[1], device=flat.device)[None, :]
                < torch.tensor(lengths, device=flat.device)[:, None]
            )
            sim = sim.masked_fill(~valid[:, None, :], float("-inf"))
        best, idx = sim.max(dim=-1)
        nearest = torch.gather(bank_o, 1, idx[..., None].expand(-1, -1, flat.shape[-1]))
        nearest = torch.where((best >= self.threshold)[..., None], nearest, flat)
        blended = flat * (1 - self.strength) + self.strength * nearest
        if uniform:
            return blended
        has_bank = torch.tensor([n > 0 for n in lengths], device=flat.device)
        return torch.where(has_bank[:, None, None], blended, flat)


def _padded(per_row: list[list[Tensor]], like: Tensor) -> tuple[Tensor | None, list[int]]:
    """Each row's tensors ``[M_r, C]`` concatenated and zero-padded to ``[B, max M_r, C]`` (None when all empty),
    with the lengths ``M_r``."""
    rows = [
        (torch.cat(ts) if len(ts) > 1 else ts[0]) if ts else like.new_zeros(0, like.shape[-1])
        for ts in per_row
    ]
    lengths = [r.shape[0] for r in rows]
    m = max(lengths, default=0)
    if m == 0:
        return None, lengths
    if min(lengths) == m:
        return torch.stack(rows), lengths
    return torch.stack([F.pad(r, (0, 0, 0, m - r.shape[0])) for r in rows]), lengths


class StreamV2V(StreamDiffusion):
    #: the settings with which this class computes what the authors' code computes; any other value is a variant of
    #: ours, named in the report header (eval.method_notes)
    reference_settings = {"bank_write": "calls", "clip_skip": 0}

    def __init__(
        self,
        model: Any = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        t_index_list: list[int] | tuple[int, ...] = DEFAULT_T_INDEX_LIST,
        cfg_type: str = "none",
        guidance_scale: float = 1.0,
        delta: float = 1.0,
        similar_image_filter: bool = False,
        similar_image_filter_threshold: float = 0.98,
        similar_image_filter_max_skip_frame: int = 10,
        bank_size: int = 1,
        update: str = "tome",
        update_interval: int = 4,
        bank_write: str = "calls",
        first_frame_repeats: int | str = 0,
        fusion: bool = True,
        fusion_strength: float = 0.8,
        fusion_threshold: float = 0.98,
        fusion_layers: list[str] | tuple[str, ...] = ("up_blocks.0", "up_blocks.1", "mid_block"),
        num_inference_steps: int = 50,
        noise_schedule: str | None = "scaled_linear",
        clip_skip: int | None = 0,
    ) -> None:
        if cfg_type in ("full", "initialize") and float(guidance_scale) > 1.0:
            raise ValueError(
                "streamv2v: cfg_type full/initialize add negative-prompt rows to the UNet batch, which the feature "
                "bank's per-row bookkeeping does not cover; use cfg_type none or self"
            )
        if update not in UPDATE_RULES:
            raise ValueError(f"update must be one of {UPDATE_RULES}, got {update!r}")
        if bank_write not in BANK_WRITES:
            raise ValueError(f"bank_write must be one of {BANK_WRITES}, got {bank_write!r}")
        if int(bank_size) < 1 or int(update_interval) < 1:
            raise ValueError("bank_size and update_interval must be >= 1")
        if update == "tome" and int(bank_size) != 1:
            raise ValueError(
                "update=tome keeps one merged entry per layer and step: set bank_size: 1 (or update: fifo)"
            )
        n_steps = len(t_index_list)
        # the reference's vid2vid script: `for _ in range(stream.batch_size)`
        if first_frame_repeats == "batch_size":
            first_frame_repeats = n_steps
        if (
            not isinstance(first_frame_repeats, int)
            or isinstance(first_frame_repeats, bool)
            or first_frame_repeats < 0
        ):
            raise ValueError(
                f"first_frame_repeats must be an int >= 0 or 'batch_size' (= len(t_index_list)), got "
                f"{first_frame_repeats!r}"
            )
        if first_frame_repeats and similar_image_filter:
            raise ValueError(
                "first_frame_repeats with similar_image_filter: the reference's filter would skip the repeated first "
                "frame, which is not reproduced here; set one of them off"
            )
        self.bank = FeatureBank(int(bank_size), update)
        self.update_interval = int(update_interval)
        self.bank_write = bank_write
        self.first_frame_repeats = int(first_frame_repeats)
        self.calls = 0
        self._repeat_first = False
        super().__init__(
            model,
            device,
            dtype,
            t_index_list,
            stream_batch=True,
            noise="fixed",
            cfg_type=cfg_type,
            guidance_scale=guidance_scale,
            delta=delta,
            similar_image_filter=similar_image_filter,
            similar_image_filter_threshold=similar_image_filter_threshold,
            similar_image_filter_max_skip_frame=similar_image_filter_max_skip_frame,
            num_inference_steps=num_inference_steps,
            noise_schedule=noise_schedule,
            clip_skip=clip_skip,  # the reference's prepare calls pipe.encode_prompt without a clip skip
        )
        procs = {}
        for name, proc in self.comps.unet.attn_processors.items():
            if name.endswith("attn1.processor"):
                layer = name[: -len(".processor")]
                fuse = bool(fusion) and any(layer.startswith(p) for p in fusion_layers)
                procs[name] = FeatureBankAttnProcessor(
                    layer, self.bank, fuse, fusion_strength, fusion_threshold
                )
            else:
                procs[name] = proc
        self.comps.unet.set_attn_processor(procs)

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "bank_write": self.bank_write}

    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        super().prepare(prompt, height=height, width=width, seed=seed)
        self.bank.seed = int(seed)
        self._repeat_first = self.first_frame_repeats > 0
        # the reference's stream buffer: zeros at steps 1..n-1 before any frame
        if self.bank_write == "calls":
            zeros = torch.zeros(self.latent_shape, device=self.device, dtype=self.comps.dtype)
            for step in range(1, self.n_steps):
                stock = torch.zeros_like(zeros) if self.use_rcfg else None
                self.in_flight.append(InFlight(NOT_EMITTED, zeros.clone(), step, stock))

    def reset(self) -> None:
        super().reset()
        self.calls = 0
        self._repeat_first = False
        if getattr(self, "bank", None) is not None:
            self.bank.clear()

    def push(self, index: int, frame: Tensor) -> list[Emission]:
        # the reference's vid2vid script pushes its first frame batch_size times before its loop
        if self._repeat_first:
            self._repeat_first = False
            for _ in range(self.first_frame_repeats):
                self.in_flight.appendleft(self.start(NOT_EMITTED, frame))
                self.advance()  # emits nothing: these rows, and the placeholders they push out, are not frames
        return super().push(index, frame)

    def unet(
        self, latents: Tensor, timesteps: Tensor, rows: list[InFlight], embeds: Tensor | None = None
    ) -> Tensor:
        self.bank.steps = [r.step for r in rows]
        if self.bank_write == "calls":
            self.bank.indices = [self.calls] * len(rows)
            self.bank.write = [self.calls % self.update_interval == 0] * len(rows)
        else:
            self.bank.indices = [r.index for r in rows]
            self.bank.write = [r.index >= 0 and r.index % self.update_interval == 0 for r in rows]
        self.calls += 1
        return super().unet(latents, timesteps, rows, embeds)
