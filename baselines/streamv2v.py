"""StreamV2V (Liang et al., 2024; github.com/Jeff-LiangF/streamv2v) as a StreamMethod: StreamDiffusion's stream
batch plus a **feature bank** that carries appearance from earlier frames.

* **Extended self-attention**: in every spatial self-attention layer, the queries of the current frame attend to its
  own keys/values *and* to the banked keys/values of earlier frames (at the same denoising step).
* **Feature fusion**: in the layers named by ``fusion_layers`` (the reference: ``up_blocks.0``, ``up_blocks.1``,
  ``mid_block``), each output token is blended with its nearest banked output token when their cosine similarity
  reaches ``fusion_threshold``: ``out = (1 - s) * out + s * nearest``.
* **Bank update**: every ``update_interval``-th frame is written. ``update: fifo`` keeps the last ``bank_size``
  written frames (oldest evicted); ``update: tome`` (the reference's default) keeps one entry per layer and step and
  merges each new frame into it by random bipartite token merging (ToMe, ratio 0.5), so it stays one frame's worth
  of tokens. Either way the bank is bounded: at most ``bank_size`` frames of tokens per layer and step.

Everything is done by an attention processor on the diffusers UNet (no fork of its code).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.common import InFlight
from baselines.streamdiffusion import StreamDiffusion

UPDATE_RULES = ("fifo", "tome")


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
    # set by the method before each UNet call, one item per batch row:
    steps: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    write: list[bool] = field(default_factory=list)

    def get(self, layer: str, step: int) -> deque[BankEntry]:
        return self.entries.get((layer, step), deque())

    def add(self, layer: str, step: int, entry: BankEntry, index: int) -> None:
        q = self.entries.setdefault((layer, step), deque(maxlen=self.size))
        if self.update == "tome" and q:
            entry = tome_merge(q.pop(), entry, _key(self.seed, index, step, layer))
        q.append(entry)

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


def tome_merge(old: BankEntry, new: BankEntry, seed: int) -> BankEntry:
    """Random bipartite soft matching over the tokens of both entries, keyed on the keys: a random half (src) is
    averaged into its most similar token of the other half (dst); the dst tokens are the merged entry."""
    keys = torch.cat([old.keys, new.keys])
    values = torch.cat([old.values, new.values])
    outputs = torch.cat([old.outputs, new.outputs])
    n = keys.shape[0]
    r = n // 2
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(keys.device)
    src, dst = perm[:r], perm[r:]
    metric = F.normalize(keys.float(), dim=-1)
    nearest = (metric[src] @ metric[dst].T).argmax(dim=-1)

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
    def __init__(
        self,
        model: Any = "tiny",
        device: str = "cpu",
        dtype: str = "float32",
        t_index_list: list[int] | tuple[int, ...] = (30, 36, 42),
        cfg_type: str = "none",
        guidance_scale: float = 1.0,
        delta: float = 1.0,
        similar_image_filter: bool = False,
        similar_image_filter_threshold: float = 0.98,
        similar_image_filter_max_skip_frame: int = 10,
        bank_size: int = 1,
        update: str = "tome",
        update_interval: int = 4,
        fusion: bool = True,
        fusion_strength: float = 0.8,
        fusion_threshold: float = 0.98,
        fusion_layers: list[str] | tuple[str, ...] = ("up_blocks.0", "up_blocks.1", "mid_block"),
        num_inference_steps: int = 50,
        noise_schedule: str | None = "scaled_linear",
    ) -> None:
        if cfg_type in ("full", "initialize") and float(guidance_scale) > 1.0:
            raise ValueError(
                "streamv2v: cfg_type full/initialize add negative-prompt rows to the UNet batch, which the feature "
                "bank's per-row bookkeeping does not cover; use cfg_type none or self"
            )
        if update not in UPDATE_RULES:
            raise ValueError(f"update must be one of {UPDATE_RULES}, got {update!r}")
        if int(bank_size) < 1 or int(update_interval) < 1:
            raise ValueError("bank_size and update_interval must be >= 1")
        if update == "tome" and int(bank_size) != 1:
            raise ValueError(
                "update=tome keeps one merged entry per layer and step: set bank_size: 1 (or update: fifo)"
            )
        self.bank = FeatureBank(int(bank_size), update)
        self.update_interval = int(update_interval)
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

    def prepare(self, prompt: str, *, height: int, width: int, seed: int) -> None:
        super().prepare(prompt, height=height, width=width, seed=seed)
        self.bank.seed = int(seed)

    def reset(self) -> None:
        super().reset()
        if getattr(self, "bank", None) is not None:
            self.bank.clear()

    def unet(
        self, latents: Tensor, timesteps: Tensor, rows: list[InFlight], embeds: Tensor | None = None
    ) -> Tensor:
        self.bank.steps = [r.step for r in rows]
        self.bank.indices = [r.index for r in rows]
        self.bank.write = [r.index % self.update_interval == 0 for r in rows]
        return super().unet(latents, timesteps, rows, embeds)
