"""Each baseline's defining mechanism (the StreamMethod contract itself is tests/test_method_contract.py).

Tiny random-init model, 64x64 frames, CPU."""

from __future__ import annotations

import pytest
import torch

from baselines.animatediff_window import AnimateDiffWindow, window_lookahead
from baselines.common import CFG_TYPES
from baselines.per_frame_img2img import PerFrameImg2Img
from baselines.streamdiffusion import SimilarImageFilter, StreamDiffusion
from baselines.streamv2v import (
    BankEntry,
    FeatureBank,
    FeatureBankAttnProcessor,
    StreamV2V,
    nearest_features,
    tome_merge,
)
from eval.datasets.synthetic import generate_clip
from live2diff.attention import FrameGroupNorm, temporal_blocks
from live2diff.components import encode_prompt, vae_decode, vae_encode
from tests.live2diff_helpers import randomise_motion_out

H = W = 64


def run(method, frames, seed=7, prompt="an oil painting"):
    """Stream ``frames``; return outputs in index order and the push at which each was emitted (len = flush)."""
    method.prepare(prompt, height=H, width=W, seed=seed)
    outs, when = {}, {}
    for i, f in enumerate(frames):
        for j, o in method.push(i, f.clone()):
            outs[j], when[j] = o, i
    for j, o in method.flush():
        outs[j], when[j] = o, len(frames)
    assert sorted(outs) == list(range(len(frames)))
    return torch.stack([outs[i] for i in range(len(frames))]), [when[i] for i in range(len(frames))]


@pytest.fixture(scope="module")
def clip():
    return generate_clip(8, H, W, seed=11).frames


# ------------------------------------------------------------------------------------------ stream batch
def test_stream_batch_equals_sequential_denoising_with_same_noise(clip):
    """Output i of the stream batch = the k LCM steps run on frame i alone, written out here, with the same
    per-step noise — and it comes out k - 1 pushes late."""
    m = StreamDiffusion(t_index_list=[20, 30, 40], cfg_type="none", similar_image_filter=False)
    out, when = run(m, clip)
    assert when[:5] == [2, 3, 4, 5, 6]  # lag = len(t_index_list) - 1
    assert when[-2:] == [len(clip)] * 2  # drained by flush
    m.prepare("an oil painting", height=H, width=W, seed=7)
    s, c = m.schedule, m.comps
    for i in (0, 5):
        x0 = vae_encode(c, clip[i][None])
        x = s.add_noise(x0, m.init_noise[0:1], 0)
        for j in range(s.n_steps):
            eps = c.unet(x, s.timesteps[j : j + 1], encoder_hidden_states=m.prompt_embeds).sample
            x0 = s.denoise(x, eps, j)
            if j + 1 < s.n_steps:
                x = s.add_noise(x0, m.init_noise[j + 1 : j + 2], j + 1)
        torch.testing.assert_close(out[i], vae_decode(c, x0)[0], atol=1e-5, rtol=1e-4)


def test_stream_batch_with_rcfg_equals_per_frame_schedule(clip):
    """RCFG's stock noise travels with its frame through the batch, so batched == one frame at a time."""
    kw = dict(t_index_list=[20, 30, 40], cfg_type="self", guidance_scale=1.4, similar_image_filter=False)
    a, _ = run(StreamDiffusion(stream_batch=True, **kw), clip)
    b, when = run(StreamDiffusion(stream_batch=False, **kw), clip)
    assert when == list(range(len(clip)))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    c, _ = run(StreamDiffusion(stream_batch=True, **{**kw, "cfg_type": "none"}), clip)
    assert not torch.allclose(a, c, atol=1e-4), "RCFG (guidance 1.4) has no effect"


def _reference_stream_diffusion(m, frames, cfg_type, guidance, delta):
    """StreamDiffusion's stream batch transcribed from the reference (``pipeline.py``: ``prepare``,
    ``predict_x0_batch``, ``unet_step``, ``scheduler_step_batch``; use_denoising_batch, frame_buffer_size 1,
    do_add_noise), on our UNet, VAE, schedule constants and init_noise. The reference's buffer starts as zeros, so its
    call k outputs frame k - (n - 1); it is fed n - 1 more frames to drain."""
    s, c = m.schedule, m.comps
    n = s.n_steps
    col = lambda v: v.view(n, 1, 1, 1)  # noqa: E731
    alpha, beta, c_skip, c_out = col(s.alpha_sqrt), col(s.beta_sqrt), col(s.c_skip), col(s.c_out)
    init_noise = m.init_noise
    stock_noise = torch.zeros_like(init_noise)
    buffer = torch.zeros((n - 1,) + tuple(init_noise.shape[1:]))
    t_list = s.timesteps
    embeds = m.prompt_embeds.repeat(n, 1, 1)
    if cfg_type == "initialize":
        embeds = torch.cat([encode_prompt(c, m.negative_prompt), embeds])

    def scheduler_step_batch(model_pred, x_t):
        f_theta = (x_t - beta * model_pred) / alpha
        return c_out * f_theta + c_skip * x_t

    outs = []
    for f in list(frames) + [frames[-1]] * (n - 1):
        x_t = alpha[0] * vae_encode(c, f[None]) + beta[0] * init_noise[0:1]  # encode_image
        x_t = torch.cat((x_t, buffer), dim=0)
        stock_noise = torch.cat((init_noise[0:1], stock_noise[:-1]), dim=0)
        if cfg_type == "initialize":
            x_plus_uc, ts = torch.cat([x_t[0:1], x_t]), torch.cat([t_list[0:1], t_list])
        else:
            x_plus_uc, ts = x_t, t_list
        model_pred = c.unet(x_plus_uc, ts, encoder_hidden_states=embeds, return_dict=False)[0]
        if cfg_type == "initialize":
            noise_pred_text = model_pred[1:]
            stock_noise = torch.cat([model_pred[0:1], stock_noise[1:]], dim=0)
        else:
            noise_pred_text = model_pred
        noise_pred_uncond = stock_noise * delta
        model_pred = noise_pred_uncond + guidance * (noise_pred_text - noise_pred_uncond)
        denoised_batch = scheduler_step_batch(model_pred, x_t)
        delta_x = scheduler_step_batch(model_pred, beta * stock_noise)
        alpha_next = torch.cat([alpha[1:], torch.ones_like(alpha[0:1])], dim=0)
        beta_next = torch.cat([beta[1:], torch.ones_like(beta[0:1])], dim=0)
        delta_x = alpha_next * delta_x / beta_next
        stock_noise = torch.cat([init_noise[1:], init_noise[0:1]], dim=0) + delta_x
        buffer = alpha[1:] * denoised_batch[:-1] + beta[1:] * init_noise[1:]
        outs.append(vae_decode(c, denoised_batch[-1:])[0])
    return torch.stack(outs[n - 1 :])


@pytest.mark.parametrize("cfg_type", ["self", "initialize"])
def test_residual_cfg_equals_the_reference_unet_step(clip, cfg_type):
    """Residual CFG (self-negative and onetime-negative) against the reference's unet_step, transcribed above: the
    stock noise carries the residual ``delta_x`` from step to step. Without that residual (stock = init_noise only)
    the outputs differ from the reference by far more than the tolerance (checked below)."""
    kw = dict(t_index_list=[20, 30, 40], similar_image_filter=False, negative_prompt="blurry")
    g, delta = 1.8, 0.9
    m = StreamDiffusion(cfg_type=cfg_type, guidance_scale=g, delta=delta, **kw)
    ours, _ = run(m, clip)
    m.prepare("an oil painting", height=H, width=W, seed=7)
    with torch.no_grad():
        want = _reference_stream_diffusion(m, clip, cfg_type, g, delta)
    torch.testing.assert_close(ours, want, atol=2e-5, rtol=1e-4)
    plain, _ = run(StreamDiffusion(cfg_type="none", **kw), clip)
    gap = (plain - want).abs().max()
    assert gap > 1e-3, f"guidance must matter in this test (max difference {gap})"


def test_cfg_full_and_initialize_written_out(clip):
    """One LCM step: full CFG = negative + g * (text - negative), two UNet predictions written out here; with one
    step, initialize's stock noise is that same negative prediction (delta 1), so it gives the same output; with
    three steps it differs from both full and self. Guidance 1.0 turns every kind off."""
    g = 1.6
    kw = dict(t_index_list=[40], similar_image_filter=False, guidance_scale=g, negative_prompt="blurry")
    full, _ = run(StreamDiffusion(cfg_type="full", **kw), clip[:3])
    init, _ = run(StreamDiffusion(cfg_type="initialize", **kw), clip[:3])
    m = StreamDiffusion(cfg_type="full", **kw)
    m.prepare("an oil painting", height=H, width=W, seed=7)
    s, c = m.schedule, m.comps
    neg = encode_prompt(c, "blurry")
    for i in range(3):
        x = s.add_noise(vae_encode(c, clip[i][None]), m.init_noise[0:1], 0)
        e_pos = c.unet(x, s.timesteps[0:1], encoder_hidden_states=m.prompt_embeds).sample
        e_neg = c.unet(x, s.timesteps[0:1], encoder_hidden_states=neg).sample
        want = vae_decode(c, s.denoise(x, e_neg + g * (e_pos - e_neg), 0))[0]
        torch.testing.assert_close(full[i], want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(init, full, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(full, run(StreamDiffusion(cfg_type="none", **kw), clip[:3])[0], atol=1e-4)
    kw3 = {**kw, "t_index_list": [20, 30, 40]}
    four = clip[:4]  # past the 3-step stream batch's fill
    outs = {t: run(StreamDiffusion(cfg_type=t, **kw3), four)[0] for t in ("full", "self", "initialize")}
    assert not torch.allclose(outs["initialize"], outs["full"], atol=1e-4)
    assert not torch.allclose(outs["initialize"], outs["self"], atol=1e-4)
    off = {t: run(StreamDiffusion(cfg_type=t, **{**kw3, "guidance_scale": 1.0}), four)[0] for t in CFG_TYPES}
    for t in CFG_TYPES:
        torch.testing.assert_close(off[t], off["none"])
    with pytest.raises(ValueError, match="cfg_type"):
        StreamV2V(cfg_type="full", guidance_scale=1.5)


def test_per_frame_img2img_uses_no_other_frame(clip):
    m = PerFrameImg2Img()
    out, when = run(m, clip)
    assert when == list(range(len(clip)))  # no lag
    m.prepare("an oil painting", height=H, width=W, seed=7)
    alone = m.push(5, clip[5].clone())
    assert alone[0][0] == 5 and torch.equal(alone[0][1], out[5])


# ------------------------------------------------------------------------------------------ similarity filter
def test_similarity_filter_skips_an_exact_duplicate(clip):
    """A skipped frame is emitted at once with the last emitted output — with a stream batch (lag 2) that is an
    older frame's output, as the reference returns prev_image_result — and never reaches the model."""
    frames = torch.stack([clip[0], clip[2], clip[3], clip[4], clip[4], clip[6]])  # frame 4 duplicates frame 3
    m = StreamDiffusion(similar_image_filter=True, similar_image_filter_threshold=0.98)
    out, when = run(m, frames)
    assert m.skipped == [4]
    assert when[4] == 4, "a skipped frame is emitted at once"
    assert torch.equal(out[4], out[1]), "...with the last emitted output (frame 1's, emitted at push 3)"
    off, _ = run(StreamDiffusion(similar_image_filter=False), frames[[0, 1, 2, 3, 5]])
    torch.testing.assert_close(out[[0, 1, 2, 3, 5]], off)  # the model never saw frame 4
    # no output to repeat yet (pushes 0..2 of a lag-2 batch): a duplicate is processed
    early = torch.stack([clip[0], clip[0], clip[0], clip[5]])
    run(m, early)
    assert m.skipped == []


def test_similarity_filter_probability_and_max_skip():
    """The reference's counting: skip_count is not reset by a processed dissimilar frame, and a skip is refused
    (the frame processed, the count reset) only once skip_count > max_skip_frame: max_skip_frame + 1 in a row."""
    f = SimilarImageFilter(threshold=0.98, max_skip_frame=3)
    x = torch.rand(3, 8, 8) * 2 - 1
    assert not f.should_skip(x, 0.5)  # the first frame is always processed
    assert [f.should_skip(x, 0.999) for _ in range(6)] == [True, True, True, True, False, True]
    assert f.skip_probability(-x) == 0.0  # dissimilar: never skipped
    assert [f.should_skip(x, 0.999) for _ in range(2)] == [True, True]  # skip_count is 3 now
    assert not f.should_skip(-x, 0.999) and f.skip_count == 3, "a processed frame does not reset the count"
    assert [f.should_skip(-x, 0.999) for _ in range(3)] == [True, False, True]
    assert not SimilarImageFilter(threshold=1.0).should_skip(x, 0.0)  # threshold 1 disables skipping


def _reference_filter(threshold, max_skip_frame, frames, samples):
    """StreamDiffusion's SimilarImageFilter.__call__ transcribed (random.uniform replaced by ``samples``)."""
    prev, count, skipped = None, 0, []
    cos = torch.nn.CosineSimilarity(dim=0, eps=1e-6)
    for i, (x, sample) in enumerate(zip(frames, samples)):
        if prev is None:
            prev = x.clone()
            continue
        cos_sim = cos(prev.reshape(-1), x.reshape(-1)).item()
        skip_prob = 0 if threshold >= 1 else max(0, 1 - (1 - cos_sim) / (1 - threshold))
        if skip_prob < sample:
            prev = x.clone()
        elif count > max_skip_frame:
            count = 0
            prev = x.clone()
        else:
            count += 1
            skipped.append(i)
    return skipped


def test_similarity_filter_matches_the_reference_on_random_streams():
    g = torch.Generator().manual_seed(4)
    for trial in range(20):
        base = torch.rand(3, 6, 6, generator=g) * 2 - 1
        frames = [(base + 0.1 * torch.randn(3, 6, 6, generator=g)) * (1 + (k % 5 == 0)) for k in range(40)]
        samples = torch.rand(40, generator=g).tolist()
        f = SimilarImageFilter(threshold=0.9, max_skip_frame=trial % 4)
        ours = [i for i, (x, u) in enumerate(zip(frames, samples)) if f.should_skip(x, u)]
        assert ours == _reference_filter(0.9, trial % 4, frames, samples)
        assert ours, "the test streams must exercise skipping"


def test_skip_pattern_reproducible_under_seed(clip):
    """Near-duplicates (skip probability strictly between 0 and 1): the same seed gives the same skips, other seeds
    other skips — the draw is a function of (seed, frame index), not of a global RNG."""
    g = torch.Generator().manual_seed(0)
    base = clip[0]
    frames = torch.stack(
        [(base + 0.015 * torch.randn(base.shape, generator=g)).clamp(0, 1) for _ in range(12)]
    )
    f = SimilarImageFilter(threshold=0.98)
    f.should_skip(frames[0] * 2 - 1, 1.0)
    p = f.skip_probability(frames[1] * 2 - 1)
    assert 0.05 < p < 0.95, f"test frames should be near-duplicates, skip probability {p}"
    m = StreamDiffusion(similar_image_filter=True, similar_image_filter_threshold=0.98, t_index_list=[45])
    patterns = {}
    for seed in (1, 1, 2, 3, 4, 5):
        run(m, frames, seed=seed)
        patterns.setdefault(seed, []).append(tuple(m.skipped))
        m.reset()
    assert patterns[1][0] == patterns[1][1]
    assert len({p[0] for p in patterns.values()}) > 1


# ------------------------------------------------------------------------------------------ StreamV2V
@pytest.mark.parametrize("update,size", [("fifo", 3), ("tome", 1)])
def test_feature_bank_stays_bounded_over_80_frames(update, size):
    frames = generate_clip(80, H, W, seed=5).frames  # full after `size` frames; 30 more after frame 50
    m = StreamV2V(update=update, bank_size=size, update_interval=1, t_index_list=[32, 45])
    m.prepare("a sketch", height=H, width=W, seed=1)
    sizes = []
    for i, f in enumerate(frames):
        m.push(i, f)
        assert m.bank.max_entries() <= size
        sizes.append(m.bank.nbytes())
    m.flush()
    assert sizes[-1] == max(sizes) == sizes[50], "bank memory must stop growing once full"
    n_layers = sum(k.endswith("attn1.processor") for k in m.comps.unet.attn_processors)
    assert len(m.bank.entries) == n_layers * 2  # one queue per self-attention layer and denoising step


@pytest.mark.parametrize("bank_write", ["frames", "calls"])
def test_feature_bank_changes_later_frames_only(clip, bank_write):
    """Under ``frames`` frame 0 meets an empty bank, so it equals plain stream batch; later frames attend to banked
    frames. Under ``calls`` (the reference's rule) the first call writes the zero-initialised buffer's placeholder
    rows, which frame 0 reads at its later steps: it differs from plain stream batch too. (The tiny random model's
    decoder damps the effect to ~1e-6, hence exact comparisons; the arithmetic of the processor is checked below.)"""
    plain, _ = run(StreamDiffusion(cfg_type="none", similar_image_filter=False), clip)
    kw = dict(update="fifo", bank_size=2, update_interval=1, bank_write=bank_write)
    v2v, _ = run(StreamV2V(**kw, fusion=False), clip)
    assert torch.equal(v2v[0], plain[0]) == (bank_write == "frames")
    assert not torch.equal(v2v[4], plain[4])
    fused, _ = run(StreamV2V(**kw, fusion_threshold=-1.0), clip)
    assert not torch.equal(fused[4], v2v[4]), "feature fusion has no effect"
    if bank_write == "frames":
        assert torch.equal(fused[0], v2v[0])


@pytest.mark.parametrize("fuse", [False, True])
def test_extended_self_attention_and_fusion_arithmetic(fuse):
    """The processor = attention over [own keys; banked keys] (then blend with the nearest banked outputs)."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4).eval()
    bank = FeatureBank(size=2, update="fifo")
    banked = BankEntry(torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 8))
    bank.add("layer", 0, banked, index=0)
    bank.steps, bank.indices, bank.write = [0], [1], [False]
    attn.set_processor(FeatureBankAttnProcessor("layer", bank, fuse=fuse, strength=0.8, threshold=-1.0))
    x = torch.randn(1, 6, 8)
    with torch.no_grad():
        got = attn(x)
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        k, v = torch.cat([k[0], banked.keys]), torch.cat([v[0], banked.values])
        split = lambda t: t.view(1, -1, 2, 4).transpose(1, 2)  # noqa: E731
        o = torch.nn.functional.scaled_dot_product_attention(split(q[0]), split(k), split(v))
        want = attn.to_out[0](o.transpose(1, 2).reshape(1, -1, 8))
        if fuse:
            want = 0.2 * want + 0.8 * nearest_features(want[0], banked.outputs, -1.0)[None]
    torch.testing.assert_close(got, want)


def test_update_interval_writes_every_nth_frame(clip):
    m = StreamV2V(update="fifo", bank_size=8, update_interval=3, bank_write="frames")
    run(m, clip)  # 8 frames: 0, 3 and 6 are written (at every step)
    assert m.bank.max_entries() == 3
    m.reset()
    assert m.bank.max_entries() == 0


def test_update_interval_writes_every_nth_call_with_all_its_rows(clip):
    """The reference's rule: calls 0, 3, 6, 9 write every row they hold. 8 frames, 3 steps: calls 0-7 hold all three
    steps (placeholder rows at first), flush call 8 holds steps 1-2, call 9 step 2 only."""
    m = StreamV2V(update="fifo", bank_size=8, update_interval=3, t_index_list=[30, 36, 42])
    run(m, clip)
    assert m.calls == 10
    layer = next(iter(m.bank.entries))[0]
    assert [len(m.bank.get(layer, step)) for step in range(3)] == [3, 3, 4]
    m.reset()
    assert m.bank.max_entries() == 0 and m.calls == 0


def test_placeholder_rows_and_repeated_first_frame_emit_nothing(clip):
    """bank_write=calls: the first call already holds n rows (frame 0 + zero placeholders); first_frame_repeats=k
    runs k calls with frame 0 before it. Neither adds an output: frames 0..7 come out once each, at the usual lag."""
    m = StreamV2V(t_index_list=[30, 40, 45], first_frame_repeats="batch_size")
    assert m.first_frame_repeats == 3
    sizes = []
    unet = m.unet
    m.unet = lambda x, *a, **k: sizes.append(x.shape[0]) or unet(x, *a, **k)
    _, when = run(m, clip)
    assert when == [2, 3, 4, 5, 6, 7, 8, 8] and sizes == [3] * 3 + [3] * 8 + [2, 1]
    assert m.calls == 3 + 8 + 2


def test_streamv2v_refuses_settings_it_does_not_reproduce():
    with pytest.raises(ValueError, match="bank_write"):
        StreamV2V(bank_write="steps")
    with pytest.raises(ValueError, match="first_frame_repeats"):
        StreamV2V(first_frame_repeats="twice")
    with pytest.raises(ValueError, match="similar_image_filter"):
        StreamV2V(first_frame_repeats=2, similar_image_filter=True)


@pytest.mark.parametrize("sizes,max_calls", [((1, 1, 1), 1), ((2, 1, 0), 3)])
def test_feature_bank_attention_is_batched_and_equal_to_per_row(monkeypatch, sizes, max_calls):
    """Rows at different denoising steps read their own step's bank. Steady state (every bank equally full): ONE
    attention call for all rows; while banks fill (2 entries, 1, none): one call per distinct length. Either way the
    result equals per-row attention and fusion written out here (the reference's get_nn_feats + blend)."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(1)
    attn = Attention(query_dim=8, heads=2, dim_head=4).eval()
    bank = FeatureBank(size=2, update="fifo")
    entries = {
        step: [BankEntry(*(torch.randn(5, 8) for _ in range(3))) for _ in range(k)]
        for step, k in enumerate(sizes)
    }
    for step, es in entries.items():
        for e in es:
            bank.add("layer", step, e, index=0)
    bank.steps, bank.indices, bank.write = [0, 1, 2], [5, 4, 3], [False] * 3
    proc = FeatureBankAttnProcessor("layer", bank, fuse=True, strength=0.8, threshold=0.0)
    attn.set_processor(proc)
    x = torch.randn(3, 6, 8)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k)
    )
    with torch.no_grad():
        got = attn(x)
    monkeypatch.undo()
    assert len(calls) == max_calls, f"{len(calls)} attention calls for 3 rows with bank entries {sizes}"
    split = lambda t: t.view(1, -1, 2, 4).transpose(1, 2)  # noqa: E731
    with torch.no_grad():
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        for r in range(3):
            es = entries[r]
            kr = torch.cat([k[r]] + [e.keys for e in es])
            vr = torch.cat([v[r]] + [e.values for e in es])
            o = sdpa(split(q[r]), split(kr), split(vr))
            want = attn.to_out[0](o.transpose(1, 2).reshape(1, -1, 8))[0]
            if es:  # the reference's get_nn_feats + blend
                bo = torch.cat([e.outputs for e in es])
                sim = (
                    torch.nn.functional.normalize(want, dim=-1) @ torch.nn.functional.normalize(bo, dim=-1).T
                )
                best, idx = sim.max(-1)
                nn = torch.where((best < 0.0)[:, None], want, bo[idx])
                want = want * 0.2 + 0.8 * nn
            torch.testing.assert_close(got[r], want, atol=1e-6, rtol=1e-5)


def test_nearest_features():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(nearest_features(x, bank, 0.99), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))


def test_tome_merge_averages_each_source_token_into_its_nearest_destination():
    """The reference's random_bipartite_soft_matching (ratio 0.5, metric = keys, scatter_reduce "mean" including the
    destination itself), written out token by token: each destination token of the merged entry is the mean of
    itself and the source tokens whose most cosine-similar destination it is — keys, values and outputs alike."""
    g = torch.Generator().manual_seed(0)
    old, new = (BankEntry(*(torch.randn(6, 4, generator=g) for _ in range(3))) for _ in range(2))
    seed = 3
    perm = FeatureBank(seed=seed).seeded_permutation("layer", 0, 5, 12)  # the default random split
    merged = tome_merge(old, new, perm)
    keys = torch.cat([old.keys, new.keys])
    fields = {f: torch.cat([getattr(old, f), getattr(new, f)]) for f in ("keys", "values", "outputs")}
    n = keys.shape[0]
    src, dst = perm[: n // 2].tolist(), perm[n // 2 :].tolist()
    unit = keys / keys.norm(dim=-1, keepdim=True)
    members = {d: [d] for d in dst}
    for s_ in src:
        best = max(dst, key=lambda d: float(unit[s_] @ unit[d]))
        members[best].append(s_)
    assert sum(len(m) for m in members.values()) == n and any(len(m) > 1 for m in members.values())
    for f, x in fields.items():
        want = torch.stack([x[members[d]].mean(0) for d in dst])
        torch.testing.assert_close(getattr(merged, f), want, msg=f"merged {f} are not the token means")
    assert merged.keys.shape == (6, 4)
    again = FeatureBank(seed=seed).seeded_permutation("layer", 0, 5, 12)
    assert torch.equal(again, perm), "the default split is a function of (seed, key, step, layer)"
    assert not torch.equal(FeatureBank(seed=seed).seeded_permutation("layer", 1, 5, 12), perm)
    with pytest.raises(ValueError, match="permutation of 12"):
        tome_merge(old, new, perm[:6])


# ------------------------------------------------------------------------------------------ AnimateDiff window
def test_animatediff_window_lookahead_is_exact():
    """window 4, stride 2, 2 steps: predictions are averaged over windows at every step, so output 0 depends on
    frames up to 5 (step 0 of window [2, 6) feeds step 1 of window [0, 4)) = the declared lookahead, and on no
    later frame; it is emitted at push 5."""
    frames = generate_clip(14, H, W, seed=9).frames
    m = AnimateDiffWindow(window=4, stride=2, t_index_list=[30, 40])
    assert m.lookahead == 5 == window_lookahead(4, 2, 2)
    assert (
        window_lookahead(16, 8, 3) == 31
        and window_lookahead(16, 8, 1) == 15
        and window_lookahead(4, 4, 1) == 3
    )
    base, when = run(m, frames)
    assert when[0] == 5 and when[-1] == len(frames)
    for t, changes in ((5, True), (6, False)):
        changed = frames.clone()
        changed[t:] = torch.rand_like(changed[t:])
        out, _ = run(m, changed)
        assert torch.equal(out[0], base[0]) != changes, (
            f"output 0 {'must' if changes else 'must not'} see frame {t}"
        )


def _animatediff_whole_clip(m, frames, starts):
    """Context windows over the whole clip, written out: at every step each window predicts its frames' noise, a
    frame's predictions are averaged over its windows, then the LCM step is taken for all frames."""
    s, c = m.schedule, m.comps
    z = torch.cat([vae_encode(c, f[None]) for f in frames])
    x = torch.cat([s.add_noise(z[g : g + 1], m._noise(g, 0, z[:1]), 0) for g in range(len(frames))])
    emb = m.prompt_embeds
    for j in range(s.n_steps):
        total, count = torch.zeros_like(x), torch.zeros(len(frames), 1, 1, 1)
        for st in starts:
            w = x[st : st + m.window]
            eps = c.unet(
                w.transpose(0, 1)[None], s.timesteps[j], encoder_hidden_states=emb.repeat(len(w), 1, 1)
            )
            total[st : st + m.window] += eps.sample[0].transpose(0, 1)
            count[st : st + m.window] += 1
        x0 = s.denoise(x, total / count, j)
        if j + 1 < s.n_steps:
            x = torch.cat(
                [s.add_noise(x0[g : g + 1], m._noise(g, j + 1, x0[:1]), j + 1) for g in range(len(x0))]
            )
    return vae_decode(c, x0)


def test_animatediff_window_averages_noise_predictions_at_every_step():
    frames = generate_clip(6, H, W, seed=9).frames
    m = AnimateDiffWindow(window=4, stride=2, t_index_list=[30, 40])
    randomise_motion_out(m.comps.unet)
    out, _ = run(m, frames)
    with torch.no_grad():
        want = _animatediff_whole_clip(m, frames, starts=[0, 2])
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)
        # averaging only the final latents (the old behaviour) gives other outputs
        finals = []
        for st in (0, 2):
            finals.append(_animatediff_whole_clip(m, frames[st : st + 4], starts=[0]))
    assert not torch.allclose(out[2:4], (finals[0][2:4] + finals[1][0:2]) / 2, atol=1e-4)


class CausalTemporalAttn:
    """A mutant temporal attention: frame t attends to frames <= t only (is_causal over the frame axis)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        b, f, _ = hidden_states.shape
        q, k, v = (
            t.view(b, f, attn.heads, -1).transpose(1, 2)
            for t in (attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states))
        )
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return attn.to_out[1](attn.to_out[0](o.transpose(1, 2).reshape(b, f, -1)))


def test_animatediff_window_is_bidirectional_through_attention_only():
    """Output 0 changes when frame 1 of its window changes; with the temporal attention made causal (a mutant) it
    does not — so no other path (a GroupNorm pooled over frames, as diffusers' motion block has) leaks later frames
    into earlier ones, and the dependence seen is the attention's bidirectionality."""
    frames = generate_clip(4, H, W, seed=9).frames
    changed = frames.clone()
    changed[1] = torch.rand_like(changed[1])
    m = AnimateDiffWindow(window=4, stride=4)
    randomise_motion_out(m.comps.unet)
    assert all(isinstance(tm.norm, FrameGroupNorm) for _, tm in temporal_blocks(m.comps.unet))
    base, _ = run(m, frames)
    assert not torch.equal(run(m, changed)[0][0], base[0])
    for _, tm in temporal_blocks(m.comps.unet):
        for block in tm.transformer_blocks:
            block.attn1.set_processor(CausalTemporalAttn())
            block.attn2.set_processor(CausalTemporalAttn())
    causal, _ = run(m, frames)
    assert not torch.equal(causal[3], base[3]), "the causal mutant must change the outputs"
    torch.testing.assert_close(run(m, changed)[0][0], causal[0], atol=0, rtol=0)


def test_animatediff_window_loads_animatediff_motion_weights(tmp_path):
    """model.weights.animatediff_motion: an AnimateDiff motion-module checkpoint in the reference's key names
    (``...motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight``)."""
    from safetensors.torch import save_file

    from live2diff.convert import to_reference_state_dict

    plain = AnimateDiffWindow(window=2, stride=1)
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) for k, v in plain.comps.unet.state_dict().items()}
    ref = to_reference_state_dict(sd)
    assert any(".temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q" in k for k in ref)
    save_file({k: v.contiguous() for k, v in ref.items()}, str(tmp_path / "mm.safetensors"))
    # real weights for one component: the others are named random/none on purpose (else the weights plan refuses)
    rest = {"base": "random", "motion": "random", "lcm_lora": "none", "depth": "random"}

    def tiny(path, groups=32):  # AnimateDiff's motion modules normalise with 32 groups (the tiny model's: 8)
        unet = {"motion_norm_num_groups": groups}
        return {"size": "tiny", "unet": unet, "weights": {**rest, "animatediff_motion": str(path)}}

    with pytest.raises(ValueError, match="model.unet.motion_norm_num_groups=32"):
        AnimateDiffWindow(model=tiny(tmp_path / "mm.safetensors", groups=8), window=2, stride=1)
    m = AnimateDiffWindow(model=tiny(tmp_path / "mm.safetensors"), window=2, stride=1)
    assert (
        m.info["motion_weights"] == "animatediff:mm.safetensors"
        and plain.info["motion_weights"] == "trained:tiny_trained.safetensors"
    )
    got = m.comps.unet.state_dict()
    for k, v in sd.items():
        if ".motion_modules." in k and not k.endswith("pos_embed.pe"):
            torch.testing.assert_close(got[k], v)
    with pytest.raises(FileNotFoundError, match="model.weights.animatediff_motion"):
        AnimateDiffWindow(model=tiny(tmp_path / "no.ckpt"))


def test_animatediff_window_depth_is_optional_and_stated():
    frames = generate_clip(4, H, W, seed=9).frames
    off = AnimateDiffWindow(window=4, stride=4)
    on = AnimateDiffWindow(window=4, stride=4, depth=True)
    assert off.info["depth"] is False and on.info["depth"] is True and off.comps.depth is None
    a, _ = run(off, frames)
    b, _ = run(on, frames)
    assert not torch.equal(a, b), "depth: true must condition the UNet (tiny model: random mapping network)"


# ------------------------------------------------------------------------------------------ odd frame sizes
@pytest.mark.parametrize(
    "make", [lambda: StreamDiffusion(t_index_list=[40]), lambda: AnimateDiffWindow(window=2, stride=1)]
)
def test_frame_size_not_a_multiple_of_the_vae_stride(make):
    """Frames are resized to the VAE's stride for the model and the outputs resized back."""
    m = make()
    m.prepare("p", height=60, width=76, seed=0)
    frames = torch.rand(3, 3, 60, 76)
    outs = [o for i, f in enumerate(frames) for o in m.push(i, f)] + m.flush()
    assert sorted(j for j, _ in outs) == [0, 1, 2]
    assert all(o.shape == (3, 60, 76) and 0 <= o.min() and o.max() <= 1 for _, o in outs)
