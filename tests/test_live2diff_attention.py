"""Temporal attention with the KV-cache: position re-application, cache equivalence (short and long streams)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from live2diff.attention import (
    DeferredPositionalEmbedding,
    StreamTemporalAttnProcessor,
    TemporalAttentionState,
    causal_warmup_mask,
    install_stream_attention,
    temporal_blocks,
)
from live2diff.kv_cache import LayerKVCache, ReferenceSlotIndex, SlotIndex
from tests.live2diff_helpers import prompt_embeds, randomise_motion_out, tiny_components, trained_components


@pytest.fixture()
def patched():
    """Fresh tiny components with non-zero motion output projections."""
    comps = tiny_components(fresh=True)
    randomise_motion_out(comps.unet)
    return comps


def _first_temporal_attn(unet):
    _, tm = next(iter(temporal_blocks(unet)))
    block = tm.transformer_blocks[0]
    return block, block.attn1


def test_position_reapplication_is_exact_for_bias_free_projections(patched):
    block, attn = _first_temporal_attn(patched.unet)
    pe = block.pos_embed.pe[0]  # [24, C]
    x = torch.randn(5, 7, pe.shape[1])
    for lin in (attn.to_q, attn.to_k, attn.to_v):
        assert lin.bias is None
        cached_then_positioned = lin(x) + F.linear(pe[:7], lin.weight)
        torch.testing.assert_close(cached_then_positioned, lin(x + pe[:7]), rtol=1e-5, atol=1e-5)


def test_stream_processor_full_mode_equals_diffusers_attention_on_x_plus_pe(patched):
    """Our processor, positions added inside, equals diffusers' own processor on the pre-added hidden states."""
    block, attn = _first_temporal_attn(patched.unet)
    pe = block.pos_embed.pe
    x = torch.randn(6, 9, pe.shape[2])
    with torch.no_grad():
        reference = attn(x + pe[:, :9])  # diffusers' default processor
        deferred = DeferredPositionalEmbedding(pe)
        attn.set_processor(
            StreamTemporalAttnProcessor(TemporalAttentionState(), LayerKVCache(1, 16), deferred)
        )
        ours = attn(x)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_install_takes_over_position_embedding_and_keeps_state_dict_keys(patched):
    keys_before = set(patched.unet.state_dict())
    install_stream_attention(patched.unet, n_steps=2, window=16, warmup=8)
    assert set(patched.unet.state_dict()) == keys_before
    for _, tm in temporal_blocks(patched.unet):
        for block in tm.transformer_blocks:
            assert isinstance(block.pos_embed, DeferredPositionalEmbedding)
            x = torch.randn(1, 3, block.pos_embed.pe.shape[2])
            assert torch.equal(block.pos_embed(x), x)  # the addition moved into the processor


def test_window_larger_than_positions_is_rejected(patched):
    with pytest.raises(ValueError, match="positions"):
        install_stream_attention(patched.unet, n_steps=1, window=32, warmup=8)


def test_slot_index_ring_positions():
    idx = SlotIndex(n_steps=1, window=6, warmup=2)
    idx.set_warmup(0, 2)
    slots = [idx.advance(0) for _ in range(6)]
    assert slots == [2, 3, 4, 5, 2, 3]  # FIFO over the 4 ring slots
    pos, valid = idx.positions(0)
    assert all(valid)
    # warmup at 0,1; ring oldest->newest: slots 4,5,2,3 -> positions 2,3,4,5
    assert pos == [0, 1, 4, 5, 2, 3]


def test_slot_index_aligns_the_rows_of_a_stream_call_on_one_slot():
    """A stream batch's rows (steps filled one call apart) share one slot per call once each is written every
    call, so the call's cache write is one slice; eviction stays FIFO per step (positions by age)."""
    idx = SlotIndex(n_steps=3, window=6, warmup=2)
    for s in range(3):
        idx.set_warmup(s, 2)
    calls = [idx.advance_all([0]), idx.advance_all([0, 1])] + [idx.advance_all([0, 1, 2]) for _ in range(9)]
    assert calls[0] == [2] and calls[1] == [3, 3]
    assert all(len(set(c)) == 1 for c in calls[2:])  # aligned from the first call holding all three steps
    for s in range(3):  # FIFO: newest frame at the largest position, the others one position apart by age
        pos, valid = idx.positions(s)
        assert all(valid) and sorted(pos) == list(range(6))
        assert pos[idx.ring[s][-1]] == 5 and [pos[slot] for slot in idx.ring[s]] == [2, 3, 4, 5]
    # a call that skips a step (sequential mode, flush) still writes a free slot or the step's oldest frame
    oldest = idx.ring[2][0]
    assert idx.advance_all([2]) == [oldest]


def test_reference_slot_index_as_the_reference_and_aligned_in_steady_state():
    """The reference's bookkeeping (its initialize_attn_bias_pe_and_update_idx / update_attn_bias, written out here
    for window 16, warmup 8, 3 steps), seen through ReferenceSlotIndex: every call, each step's visible keys have
    the reference's positions, the written key the reference's query position; the stored slots are aligned (one
    slice per call) from the second call on."""
    n, W, w = 3, 16, 8
    idx = ReferenceSlotIndex(n, W, w)
    for s in range(n):
        idx.set_warmup(s, w)
    visible = [w + 1, w, w]  # the reference's unmasked prefix of attn_bias per step
    update = [w, w + 1, w]  # update_idx
    pe = [list(range(W)) for _ in range(n)]  # pe_idx
    for call in range(30):
        slots = idx.advance_all(list(range(n)))
        for s in range(n):
            pos, valid = idx.positions(s)
            want = sorted(pe[s][i] for i in range(visible[s]))
            assert sorted(p for p, v in zip(pos, valid) if v) == want, (call, s)
            assert pos[slots[s]] == pe[s][update[s]] and valid[slots[s]] == (update[s] < visible[s])
        if call >= 1:
            assert len(set(slots)) == 1, (call, slots)
        idx.end_call(list(range(n)))
        for s in range(n):  # update_attn_bias
            if visible[s] < W:
                update[s] = visible[s]
            else:
                pe[s][w:] = pe[s][w:][-1:] + pe[s][w:][:-1]
                update[s] = pe[s].index(max(pe[s]))
            visible[s] = min(visible[s] + 1, W)


def test_vector_cache_call_write_one_slice_or_per_row():
    cache = LayerKVCache(n_steps=3, window=4, kernel="vector")
    cache.ensure(hw=5, heads=2, head_dim=3, device=torch.device("cpu"), dtype=torch.float32)
    kv = torch.randn(2, 2, 3, 2, 5)  # [2 (k, v), h, d, two rows, hw]
    cache.write_call([1, 2], [3, 3], kv, aligned=True)
    cache.write_call([0, 2], [1, 2], kv, aligned=False)  # not consecutive, different slots: per row
    ref = cache.as_reference_layout()  # [n_steps, 2, hw, window, C]
    for step, slot, row in ((1, 3, 0), (2, 3, 1), (0, 1, 0), (2, 2, 1)):
        for j in range(2):  # k, v: [h, d, hw] -> [hw, h*d]
            torch.testing.assert_close(ref[step, j, :, slot], kv[j, :, :, row].permute(2, 0, 1).reshape(5, 6))
    assert cache.kv.count_nonzero() == 4 * kv[:, :, :, 0].numel()


def _stream_unet(comps, lat, emb, t, warmup, window, kernel="auto"):
    """Warmup call on the first `warmup` frames, then one frame per call (single denoising step)."""
    ctl = install_stream_attention(comps.unet, n_steps=1, window=window, warmup=warmup, kernel=kernel)
    outs = []
    with torch.no_grad():
        if warmup:
            with ctl.full(write_step=0, n_frames=warmup):
                outs.append(comps.unet(lat[:, :, :warmup], t, emb[:warmup]).sample)
        for i in range(warmup, lat.shape[2]):
            with ctl.stream([0]):
                outs.append(comps.unet(lat[:, :, i : i + 1], t.view(1), emb[:1]).sample)
    return torch.cat(outs, dim=2), ctl


@pytest.fixture(params=["random", "trained"])
def any_weights(request):
    """Random tiny components with non-zero motion outputs, or the project's trained tiny model."""
    if request.param == "trained":
        return trained_components()
    comps = tiny_components(fresh=True)
    randomise_motion_out(comps.unet)
    return comps


@pytest.mark.parametrize("warmup,kernel", [(8, "vector"), (0, "vector"), (8, "sdpa"), (0, "sdpa")])
def test_cache_equivalence_short_stream_equals_one_masked_pass(any_weights, warmup, kernel):
    patched = any_weights
    n, window = 14, 16
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 4, n, 8, 8, generator=g)
    emb = prompt_embeds(patched, n)
    t = torch.tensor(500)
    streamed, ctl = _stream_unet(patched, lat, emb, t, warmup, window, kernel)
    for proc in ctl.processors:  # the reference's layout: [n_steps, 2 (k, v), h*w, window, C]
        assert proc.cache.kernel == kernel
        ref = proc.cache.as_reference_layout()
        assert ref.shape[:2] == (1, 2) and ref.shape[3] == window
    with torch.no_grad(), ctl.full(mask=causal_warmup_mask(n, warmup)):
        offline = patched.unet(lat, t, emb).sample
    torch.testing.assert_close(streamed, offline, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # sanity: the temporal path matters (bidirectional differs)
        bidirectional = patched.unet(lat, t, emb).sample
    assert (bidirectional - offline).abs().max() > 1e-3


class NaiveTemporalAttention:
    """Reference for long streams: keeps every frame's temporal-attention input and, for each new frame, rebuilds
    its key/value set (warmup frames + most recent frames up to the window) and their positions from scratch."""

    def __init__(self, pe, warmup, window):
        self.pe, self.warmup, self.window = pe[0], warmup, window
        self.history: list[torch.Tensor] = []  # per frame [hw, C], without positions

    def _attend(self, attn, x_q, q_pos, keys):
        heads = attn.heads
        q = attn.to_q(x_q + self.pe[q_pos])  # [hw, C]
        ks = [attn.to_k(x + self.pe[p]) for p, x in keys]
        vs = [attn.to_v(x + self.pe[p]) for p, x in keys]
        hw, c = q.shape
        d = c // heads
        out = torch.zeros_like(q)
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            scores = torch.stack([(q[:, sl] * k[:, sl]).sum(-1) for k in ks], dim=-1) / math.sqrt(d)
            w = scores.softmax(-1)
            out[:, sl] = sum(w[:, i : i + 1] * vs[i][:, sl] for i in range(len(vs)))
        return out

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        n_rows, f, c = hidden_states.shape
        start = len(self.history)
        for i in range(f):
            self.history.append(hidden_states[:, i])
        outs = []
        for i in range(f):
            me = start + i
            if me < self.warmup:  # warmup frames: all warmup frames of the call, bidirectional
                visible = list(range(start, start + f))
            else:
                recent = self.window - self.warmup
                visible = list(range(min(self.warmup, me))) + list(
                    range(max(self.warmup, me - recent + 1), me + 1)
                )
            keys = [(p, self.history[j]) for p, j in enumerate(visible)]
            outs.append(self._attend(attn, self.history[me], visible.index(me), keys))
        out = torch.stack(outs, dim=1)
        return attn.to_out[1](attn.to_out[0](out))


def _fresh(weights: str):
    if weights == "trained":
        return trained_components()
    comps = tiny_components(fresh=True)
    randomise_motion_out(comps.unet)
    return comps


@pytest.mark.parametrize(  # every set-up on random weights; the trained weights once fast (the CPU kernel, Live2Diff's
    # warm-up); the other two trained set-ups repeat what the random-weight ones check: slow
    "warmup,kernel,weights",
    [
        (8, "vector", "random"),
        (0, "vector", "random"),
        (8, "sdpa", "random"),
        (8, "vector", "trained"),
        pytest.param(0, "vector", "trained", marks=pytest.mark.slow),
        pytest.param(8, "sdpa", "trained", marks=pytest.mark.slow),
    ],
)
def test_cache_equivalence_long_stream_equals_naive_recomputation(warmup, kernel, weights):
    n, window = 32, 16  # twice the window: the ring wraps and re-positions repeatedly
    comps = _fresh(weights)
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(1, 4, n, 4, 4, generator=g)
    emb = prompt_embeds(comps, n)
    t = torch.tensor(400)
    streamed, _ = _stream_unet(comps, lat, emb, t, warmup, window, kernel)

    naive = _fresh(weights)
    install_stream_attention(
        naive.unet, n_steps=1, window=window, warmup=warmup
    )  # per-frame norm, deferred pe
    for _, tm in temporal_blocks(naive.unet):
        for block in tm.transformer_blocks:
            for attn in (block.attn1, block.attn2):
                attn.set_processor(NaiveTemporalAttention(block.pos_embed.pe, warmup, window))
    outs = []
    with torch.no_grad():
        if warmup:
            outs.append(naive.unet(lat[:, :, :warmup], t, emb[:warmup]).sample)
        for i in range(warmup, n):
            outs.append(naive.unet(lat[:, :, i : i + 1], t.view(1), emb[:1]).sample)
    reference = torch.cat(outs, dim=2)
    torch.testing.assert_close(streamed, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", ["vector", "sdpa"])
def test_cache_layouts_hold_the_same_reference_content(kernel):
    """Both kernels store the reference's [n_steps, 2, h*w, window, C]: a slot written holds exactly W·x."""
    cache = LayerKVCache(n_steps=2, window=6, kernel=kernel)
    cache.ensure(hw=5, heads=2, head_dim=3, device=torch.device("cpu"), dtype=torch.float32)
    k, v = torch.randn(5, 1, 6), torch.randn(5, 1, 6)
    cache.write(1, 4, k, v)
    warm_k, warm_v = torch.randn(5, 2, 6), torch.randn(5, 2, 6)
    cache.write(0, slice(0, 2), warm_k, warm_v)
    ref = cache.as_reference_layout()
    assert ref.shape == (2, 2, 5, 6, 6)
    torch.testing.assert_close(ref[1, 0, :, 4], k[:, 0])
    torch.testing.assert_close(ref[1, 1, :, 4], v[:, 0])
    torch.testing.assert_close(ref[0, 0, :, :2], warm_k)
    torch.testing.assert_close(ref[0, 1, :, :2], warm_v)
    assert ref[1, :, :, :4].abs().sum() == 0 and ref[0, :, :, 2:].abs().sum() == 0


def test_stream_calls_write_in_place_and_reuse_index_tensors(patched):
    """Steady state: the cache storage is never reallocated or copied, and once the ring has cycled no call builds
    new position tensors (they are memoised by ring state)."""
    n, window, warmup = 8 + 3 * 8, 16, 8
    lat = torch.randn(1, 4, n, 4, 4, generator=torch.Generator().manual_seed(2))
    emb = prompt_embeds(patched, n)
    t = torch.tensor(300)
    ctl = install_stream_attention(patched.unet, n_steps=1, window=window, warmup=warmup)
    with torch.no_grad():
        with ctl.full(write_step=0, n_frames=warmup):
            patched.unet(lat[:, :, :warmup], t, emb[:warmup])
        ptrs = [(p.cache.k.data_ptr(), p.cache.v.data_ptr()) for p in ctl.processors]
        memo_sizes = []
        for i in range(warmup, n):
            with ctl.stream([0]):
                patched.unet(lat[:, :, i : i + 1], t.view(1), emb[:1])
            memo_sizes.append(len(ctl.state.memo))
    assert [(p.cache.k.data_ptr(), p.cache.v.data_ptr()) for p in ctl.processors] == ptrs
    ring = window - warmup
    assert memo_sizes[-1] == memo_sizes[2 * ring - 1]  # the third cycle of the ring reuses every entry


def test_unknown_kernel_is_rejected(patched):
    with pytest.raises(ValueError, match="kernel"):
        install_stream_attention(patched.unet, n_steps=1, window=16, warmup=8, kernel="bmm")
