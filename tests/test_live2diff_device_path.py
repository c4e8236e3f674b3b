"""The device path of Live2Diff: compiled UNet == eager, SDPA cache kernel on the whole pipeline, device-resident
noise / schedule / step indices (checked for real on CUDA: no host-to-device copy in a steady-state push)."""

from __future__ import annotations

import time

import pytest
import torch

from live2diff.method import Live2DiffMethod
from tests.live2diff_helpers import frames


def _run(m: Live2DiffMethod, clip: torch.Tensor) -> dict[int, torch.Tensor]:
    m.prepare("a watercolor cat", height=clip.shape[-2], width=clip.shape[-1], seed=3)
    out = {}
    with torch.inference_mode():
        for i, f in enumerate(clip):
            out.update((j, o.float().cpu()) for j, o in m.push(i, f))
        out.update((j, o.float().cpu()) for j, o in m.flush())
    return out


def _randomise_motion(m: Live2DiffMethod) -> None:
    g = torch.Generator().manual_seed(1)
    for name, p in m.components.unet.named_parameters():
        if "motion_modules" in name and "proj_out" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.2


def _method(**kw) -> Live2DiffMethod:
    m = Live2DiffMethod(model={"size": "tiny", "seed": 0}, warmup=4, window=8, t_index_list=[30, 40], **kw)
    _randomise_motion(m)
    return m


def test_sdpa_kernel_pipeline_equals_vector_kernel_pipeline():
    """The GPU kernel (SDPA over the cache view) gives the CPU kernel's outputs, frame for frame."""
    clip = frames(14, size=32)
    vec = _method()
    sdpa = _method()
    for p in sdpa.stream.ctl.processors:
        p.cache.requested = "sdpa"
    a, b = _run(vec, clip), _run(sdpa, clip)
    assert sdpa.stream.ctl.processors[0].cache.kernel == "sdpa"
    assert vec.stream.ctl.processors[0].cache.kernel == "vector"
    assert sorted(a) == sorted(b) == list(range(14))
    for i in a:
        torch.testing.assert_close(a[i], b[i], rtol=1e-4, atol=1e-5)


def test_schedule_and_step_indices_live_on_the_compute_device():
    m = _method()
    s = m.stream
    assert s.schedule.alpha_sqrt.device == m.components.device
    _run(m, frames(10, size=32))
    assert s.generator.device == m.components.device
    assert s._step_index and all(t.device == m.components.device for t in s._step_index.values())


def test_channels_last_is_opt_in_and_keeps_outputs():
    clip = frames(9, size=32)
    a = _run(_method(), clip)
    m = _method(channels_last=True)
    conv = m.components.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    b = _run(m, clip)
    for i in a:
        torch.testing.assert_close(a[i], b[i], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # compiling the tiny UNet for CPU took 800 s on the loaded 2-core dev machine
def test_compiled_unet_equals_eager():
    """hardware.compile=true on the tiny model: same outputs as eager within float tolerance (CPU inductor)."""
    clip = frames(10, size=32)
    eager = _run(_method(), clip)
    t0 = time.perf_counter()
    m = _method(compile=True)
    assert type(m.stream.compiled).__name__ == "OptimizedModule"
    compiled = _run(m, clip)
    elapsed = time.perf_counter() - t0
    assert sorted(compiled) == sorted(eager)
    for i in eager:
        torch.testing.assert_close(compiled[i], eager[i], rtol=1e-3, atol=1e-4)
    print(f"compile + run: {elapsed:.1f} s")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_steady_state_push_copies_only_the_frame_to_the_device():
    from torch.profiler import ProfilerActivity, profile

    m = Live2DiffMethod(model={"size": "tiny"}, device="cuda", dtype="float16", warmup=4, window=8)
    clip = frames(16, size=64)
    m.prepare("a cat", height=64, width=64, seed=0)
    with torch.inference_mode():
        for i in range(12):  # warm-up, pipeline fill, ring wrap
            m.push(i, clip[i])
        frame = clip[12].cuda()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            m.push(12, frame)
            torch.cuda.synchronize()
    htod = [e for e in prof.events() if "HtoD" in e.name]
    assert not htod, [e.name for e in htod]
