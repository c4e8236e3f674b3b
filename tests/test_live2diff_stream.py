"""The streaming pipeline through the StreamMethod interface: emission, causality, stream batch, memory."""

from __future__ import annotations

import gc
from pathlib import Path

import psutil
import pytest
import torch

from live2diff.method import Live2DiffMethod
from tests.live2diff_helpers import frames, tiny_cfg

ROOT = Path(__file__).resolve().parents[1]


def _method(**kw) -> Live2DiffMethod:
    m = Live2DiffMethod(model=tiny_cfg(), **kw)
    # Random tiny weights: give the motion modules' outputs weight so frames influence each other.
    g = torch.Generator().manual_seed(3)
    for name, p in m.components.unet.named_parameters():
        if "motion_modules" in name and "proj_out" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.2
    return m


def _run(m, clip, seed=0, prompt="a cat"):
    m.prepare(prompt, height=clip.shape[-2], width=clip.shape[-1], seed=seed)
    out = []
    for i, f in enumerate(clip):
        out += m.push(i, f)
    out += m.flush()
    return out


@pytest.fixture(scope="module")
def live2diff():
    return _method()


@pytest.mark.parametrize("n", [1, 3, 8, 12])
def test_every_index_emitted_exactly_once(live2diff, n):
    out = _run(live2diff, frames(n, size=32))
    assert sorted(i for i, _ in out) == list(range(n))
    for _, f in out:
        assert f.shape == (3, 32, 32) and f.dtype == torch.float32 and f.device.type == "cpu"
        assert 0 <= f.min() and f.max() <= 1 and torch.isfinite(f).all()


def test_output_lags_by_n_steps_minus_one_after_warmup(live2diff):
    clip = frames(14, size=32)
    live2diff.prepare("a cat", height=32, width=32, seed=0)
    emitted_at = {}
    for i, f in enumerate(clip):
        for j, _ in live2diff.push(i, f):
            emitted_at[j] = i
    for j, _ in live2diff.flush():
        emitted_at[j] = "flush"
    assert [emitted_at[j] for j in range(8)] == [7] * 8  # warmup frames leave together
    assert all(emitted_at[j] == j + 2 for j in range(8, 12))  # 3 steps -> lag 2
    assert emitted_at[12] == emitted_at[13] == "flush"


def test_deterministic_under_seed(live2diff):
    clip = frames(11, size=32)
    a = dict(_run(live2diff, clip, seed=5))
    b = dict(_run(live2diff, clip, seed=5))
    c = dict(_run(live2diff, clip, seed=6))
    assert all(torch.equal(a[i], b[i]) for i in a)
    assert any(not torch.equal(a[i], c[i]) for i in a)


def test_causality_later_frames_do_not_change_earlier_outputs(live2diff):
    n, changed = 14, 10
    clip = frames(n, size=32)
    other = clip.clone()
    other[changed:] = torch.rand_like(other[changed:])
    a, b = dict(_run(live2diff, clip)), dict(_run(live2diff, other))
    for i in range(changed):
        torch.testing.assert_close(a[i], b[i], rtol=0, atol=0)
    assert (a[changed] - b[changed]).abs().max() > 0


def test_warmup_frames_are_denoised_jointly(live2diff):
    """The declared lookahead is real: changing frame warmup-1 changes output 0."""
    assert live2diff.lookahead == 7
    clip = frames(9, size=32)
    other = clip.clone()
    other[7] = torch.rand_like(other[7])
    a, b = dict(_run(live2diff, clip)), dict(_run(live2diff, other))
    assert (a[0] - b[0]).abs().max() > 0


def test_stream_batch_equals_sequential_denoising():
    """Without the reference's placeholder rows (``stream_buffer: clean``) a stream batch is only a schedule: each
    frame's numbers are those of running its steps back to back."""
    clip = frames(13, size=32)
    batched = dict(_run(_method(stream_batch=True, stream_buffer="clean"), clip))
    sequential = dict(_run(_method(stream_batch=False, stream_buffer="clean"), clip))
    assert batched.keys() == sequential.keys()
    for i in batched:
        torch.testing.assert_close(batched[i], sequential[i], rtol=1e-4, atol=1e-5)


def test_reference_stream_buffer_differs_from_clean_only_where_its_placeholders_reach():
    """The reference's placeholder rows change nothing with 2 steps (the one placeholder entry is overwritten
    before any row can see it) and, with 3 steps, nothing before the first streamed frame; the stream batch with
    them cannot run sequentially, which is refused by name."""
    clip = frames(14, size=32)
    for steps, differs in (([30, 40], False), ([30, 36, 42], True)):
        ref = dict(_run(_method(t_index_list=steps), clip))
        clean = dict(_run(_method(t_index_list=steps, stream_buffer="clean"), clip))
        assert sorted(ref) == sorted(clean) == list(range(14))
        for i in range(8):  # the warmup block
            torch.testing.assert_close(ref[i], clean[i], rtol=0, atol=1e-6)
        gap = max((ref[i] - clean[i]).abs().max().item() for i in range(8, 14))
        assert (gap > 1e-4) == differs, (steps, gap)
    with pytest.raises(ValueError, match="stream_buffer=clean"):
        _method(stream_batch=False)
    with pytest.raises(ValueError, match="stream_buffer=clean"):
        _method(warmup=0)


@pytest.mark.parametrize(
    "kw", [{"warmup": 0, "stream_buffer": "clean"}, {"attention": "bidirectional_window", "window": 4}]
)
def test_variants_are_causal_and_complete(kw):
    m = _method(**kw)
    assert m.lookahead == 0
    n, changed = 7, 4
    clip = frames(n, size=32)
    other = clip.clone()
    other[changed:] = torch.rand_like(other[changed:])
    a, b = dict(_run(m, clip)), dict(_run(m, other))
    assert sorted(a) == list(range(n))
    for i in range(changed):
        torch.testing.assert_close(a[i], b[i], rtol=0, atol=0)
    assert (a[changed] - b[changed]).abs().max() > 0


def test_depth_changes_the_output_and_can_be_turned_off():
    clip = frames(9, size=32)
    with_depth = _method(depth=True)
    without = _method(depth="none")
    assert with_depth.stream.use_depth and not without.stream.use_depth
    a, b = dict(_run(with_depth, clip)), dict(_run(without, clip))
    assert any((a[i] - b[i]).abs().max() > 0 for i in a)


def test_reset_then_new_video_repeats_exactly(live2diff):
    clip = frames(10, size=32)
    a = dict(_run(live2diff, clip))
    live2diff.reset()
    b = dict(_run(live2diff, clip))
    assert all(torch.equal(a[i], b[i]) for i in a)


def _stream_memory(m, n_frames, checkpoints):
    m.prepare("a cat", height=32, width=32, seed=0)
    f = frames(1, size=32)[0]
    proc = psutil.Process()
    seen = {}
    for i in range(n_frames):
        m.push(i, f)
        if i + 1 in checkpoints:
            gc.collect()
            seen[i + 1] = (m.stream.cache_bytes(), m.stream.ctl.cache_shapes(), proc.memory_info().rss)
    m.flush()
    return seen


def test_bounded_memory_between_frame_50_and_120():
    m = _method(t_index_list=[30, 40], depth=False)
    seen = _stream_memory(m, 120, {50, 120})
    (b50, s50, rss50), (b200, s200, rss200) = seen[50], seen[120]
    assert b50 == b200 and s50 == s200
    assert all(s[3] == 16 for s in s50)  # [steps, 2, hw, window, C]
    assert rss200 - rss50 < 16 * 2**20


@pytest.mark.slow
def test_bounded_memory_between_frame_50_and_500():
    m = _method(t_index_list=[30, 40], depth=False)
    seen = _stream_memory(m, 500, {50, 500})
    (b50, s50, rss50), (b500, s500, rss500) = seen[50], seen[500]
    assert b50 == b500 and s50 == s500
    assert rss500 - rss50 < 16 * 2**20


def test_method_configs_compose_to_the_live2diff_method():
    """Each live2diff*.yaml has its package header and composes (the variants inherit live2diff.yaml through
    `defaults`) to Live2DiffMethod; each is built and streamed by tests/test_method_contract.py."""
    from hydra.utils import get_class

    from tests.conftest import compose

    names = sorted(p.stem for p in (ROOT / "conf" / "method").glob("live2diff*.yaml"))
    assert "live2diff" in names
    for name in names:
        text = (ROOT / "conf" / "method" / f"{name}.yaml").read_text()
        assert text.startswith(f"# @package method.{name}\n")
    for name in names:
        cfg = compose([f"method=[{name}]", "model=tiny", "hardware=cpu"])
        assert get_class(cfg.method[name]._target_) is Live2DiffMethod


@pytest.fixture(scope="module")
def live2diff_trained():
    """Live2Diff on the project's trained tiny model (model=tiny: conf/model/tiny.yaml + shipped weights)."""
    from tests.conftest import compose

    return Live2DiffMethod(model=compose(["model=tiny"]).model)


@pytest.mark.parametrize("weights", ["live2diff", "live2diff_trained"])
def test_short_stream_through_the_pipeline_equals_one_masked_offline_denoising(weights):
    """Whole pipeline (3 LCM steps, stream batch, depth, VAE): a stream no longer than the window equals denoising
    all frames at once at each step with the training mask (warmup block bidirectional, then causal) — on random
    weights and on the trained model. This is the clean variant (``stream_buffer: clean``, each frame's depth
    normalised on its own); the reference's placeholder rows and joint warmup depth are compared with the
    authors' code itself in tests/test_reference_live2diff.py."""
    from live2diff.attention import causal_warmup_mask
    from tests.conftest import compose

    clean = {"stream_buffer": "clean", "depth_norm": "per_frame"}
    if weights == "live2diff":
        live2diff = _method(**clean)
    else:
        live2diff = Live2DiffMethod(model=compose(["model=tiny"]).model, **clean)
    n, size = 13, 32
    clip = frames(n, size=size)
    streamed = dict(_run(live2diff, clip, seed=4))
    p = live2diff.stream

    def offline(mask):
        p.prepare("a cat", height=size, width=size, seed=4)
        with torch.no_grad():
            enc = [p._encode(f) for f in clip]  # same VAE/depth path
            shape = (p.n_steps, *enc[0][0].shape[1:])
            noise = torch.stack([torch.randn(shape, generator=p.generator) for _ in range(n)])  # same draws
            z, feats = torch.cat([e[0] for e in enc]), torch.cat([e[1] for e in enc])
            x = p.schedule.add_noise(z, noise[:, 0], 0)
            for j in range(p.n_steps):
                with p.ctl.full(mask=mask):
                    eps = p._unet(x.transpose(0, 1)[None], p.schedule.timesteps[j : j + 1], feats)
                x0 = p.schedule.denoise(x, eps[0].transpose(0, 1), j)
                if j + 1 < p.n_steps:
                    x = p.schedule.add_noise(x0, noise[:, j + 1], j + 1)
            return x0

    masked = offline(causal_warmup_mask(n, p.warmup))
    bidirectional = offline(None)
    assert (masked - bidirectional).abs().max() > 1e-2  # the mask matters at latent level
    decoded = p._decode(masked)
    for i in range(n):
        torch.testing.assert_close(streamed[i], decoded[i], rtol=1e-4, atol=1e-5)


def test_similarity_filter_skips_repeats_after_warmup_and_shows_the_last_output():
    """The reference pipeline's similar_image_filter: identical frames are never skipped during the warm-up (no
    output to repeat yet); afterwards a repeated frame (cosine similarity 1, skip probability 1) is emitted at once
    with the last emitted output, at most max_skip_frame + 1 times in a row (the reference's counting), and never
    reaches the model."""
    clip = frames(14, size=32)
    clip[:8] = clip[0]  # warm-up frames all identical: still all processed
    clip[11:] = clip[10]  # three repeats of frame 10 once outputs exist
    m = _method(similar_image_filter=True, similar_image_filter_max_skip_frame=1)
    m.prepare("a cat", height=32, width=32, seed=0)
    outs, last, pushed_to_model = {}, None, []
    real_push = m.stream.push
    m.stream.push = lambda i, f: (pushed_to_model.append(i), real_push(i, f))[1]
    for i, f in enumerate(clip):
        emitted = m.push(i, f)
        if i in m.skipped:
            assert [j for j, _ in emitted] == [i], "a skipped frame is emitted at once"
            assert torch.equal(emitted[0][1], last), "...with the last emitted output"
        for j, o in emitted:
            outs[j], last = o, o
    for j, o in m.flush():
        outs[j] = o
    assert sorted(outs) == list(range(14))
    assert m.skipped == [11, 12], "max_skip_frame=1: two skips, the third repeat is processed"
    assert pushed_to_model == [i for i in range(14) if i not in (11, 12)]
    off = _run(_method(), clip)
    assert not torch.equal(dict(off)[13], outs[13]), (
        "the model never saw the skipped frames (cache, noise draws)"
    )
