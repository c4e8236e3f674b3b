"""Capture-ready stream calls (issue 33, items 1-2): a steady-state ``push`` makes no host synchronisation, and one
steady stream call compiles to one graph (``torch.compile(fullgraph=True)``) that stays equal to eager over a long
stream (the ring wraps several times) without recompiling.

Tiny random model, 32x32 frames, CPU. The compile tests trace with ``aot_eager`` (Dynamo + functionalisation of the
cache writes, no code generation): what they prove — one graph, no per-call Python state, same numbers — does not
depend on the backend that generates the kernels.
"""

from __future__ import annotations

import pytest
import torch

from baselines.streamdiffusion import StreamDiffusion
from baselines.streamv2v import StreamV2V
from live2diff.method import Live2DiffMethod
from live2diff.testing.host_sync import HostSyncCounter
from tests.conftest import model_cfg
from tests.live2diff_helpers import frames, randomise_motion_out

SIZE = 32


def _live2diff(**kw) -> Live2DiffMethod:
    m = Live2DiffMethod(model=model_cfg("tiny_random"), **kw)
    randomise_motion_out(m.components.unet)
    return m


def _streamdiffusion(**kw) -> StreamDiffusion:
    return StreamDiffusion(model=model_cfg("tiny_random"), similar_image_filter=False, **kw)


def _streamv2v(**kw) -> StreamV2V:
    return StreamV2V(model=model_cfg("tiny_random"), **kw)


def _steady_pushes(m) -> int:
    """Pushes that visit every steady state at least once: Live2Diff's ring cycles through ``window - warmup``
    slot layouts (the first visit of each builds its index tensors), StreamV2V's bank is written every
    ``update_interval`` frames."""
    if isinstance(m, Live2DiffMethod):
        return m.stream.window - m.stream.warmup + m.stream.n_steps + 2
    return 2 * getattr(m, "update_interval", 1) + 3


@pytest.mark.parametrize("make", [_live2diff, _streamdiffusion, _streamv2v], ids=["live2diff", "sd", "v2v"])
def test_steady_state_push_makes_no_host_synchronisation(make):
    m = make()
    n_warm = m.steady_state_frames
    n = _steady_pushes(m)
    clip = frames(n_warm + n, size=SIZE)
    m.prepare("a cat", height=SIZE, width=SIZE, seed=0)
    emitted = 0
    with torch.inference_mode():
        for i in range(n_warm):
            m.push(i, clip[i])
        with HostSyncCounter() as counter:
            for i in range(n_warm, n_warm + n):
                emitted += len(m.push(i, clip[i]))
    assert emitted == n  # the pushes counted are steady: one output each
    assert counter.total == 0, f"{dict(counter.calls)} host syncs in {n} steady pushes:\n{counter.report()}"


def test_the_counter_sees_syncs_inside_library_code():
    x = torch.ones(3)
    with HostSyncCounter() as c:
        x.sum().item()
        bool(x.any())
        x.tolist()
        torch.nn.functional.relu(x).cpu()
    assert c.calls == {"item": 1, "__bool__": 1, "tolist": 1, "cpu": 1}


def _run(m, clip, seed: int = 3) -> dict[int, torch.Tensor]:
    m.prepare("a watercolor cat", height=SIZE, width=SIZE, seed=seed)
    out = {}
    with torch.inference_mode():
        for i, f in enumerate(clip):
            out.update((j, o.clone()) for j, o in m.push(i, f))
        out.update((j, o.clone()) for j, o in m.flush())
    return out


@pytest.mark.parametrize("kernel", ["vector", "sdpa"])
def test_capture_mode_equals_the_memoised_path(kernel):
    """Capture mode reads the ring's state from static tensors (what a compiled call sees); run eagerly it gives
    the memoised path's outputs, frame for frame, ring wraps included."""
    clip = frames(20, size=SIZE)
    ref, cap = _live2diff(warmup=4, window=8), _live2diff(warmup=4, window=8)
    for m in (ref, cap):
        for p in m.stream.ctl.processors:
            p.cache.requested = kernel
    cap.stream.ctl.capture(True)
    a, b = _run(ref, clip), _run(cap, clip)
    assert sorted(a) == sorted(b) == list(range(20))
    assert cap.stream.ctl.state.static is not None
    for i in a:
        torch.testing.assert_close(b[i], a[i], rtol=0, atol=1e-6)


def _compile_counts() -> dict:
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"]["unique_graphs"], "breaks": sum(counters["graph_break"].values())}


def _compiled_run(m, compile_fn, clip, first_steady: int) -> dict[int, torch.Tensor]:
    """Like :func:`_run`, with ``compile_fn`` applied; from the push after the first steady (compiled) call on,
    any recompilation raises (``torch.compiler.set_stance("fail_on_recompile")``)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compile_fn(m)
    m.prepare("a watercolor cat", height=SIZE, width=SIZE, seed=3)
    out = {}
    try:
        with torch.inference_mode():
            for i, f in enumerate(clip):
                if i == first_steady + 1:
                    assert _compile_counts() == {"unique_graphs": 1, "breaks": 0}
                    torch.compiler.set_stance("fail_on_recompile")
                out.update((j, o.clone()) for j, o in m.push(i, f))
            torch.compiler.set_stance("default")
            out.update((j, o.clone()) for j, o in m.flush())
    finally:
        torch.compiler.set_stance("default")
    assert _compile_counts() == {"unique_graphs": 1, "breaks": 0}
    return out


def _assert_equal(got: dict, ref: dict, n: int) -> None:
    assert sorted(got) == sorted(ref) == list(range(n))
    worst = max((got[i] - ref[i]).abs().max().item() for i in ref)
    assert worst <= 1e-5, worst


@pytest.mark.slow  # tracing the tiny motion UNet: ~45-85 s on the shared 2-core machine
@pytest.mark.parametrize("kernel", ["vector", "sdpa"])
def test_live2diff_steady_call_compiles_whole_and_equals_eager(kernel):
    """One steady Live2Diff stream call = one graph (every temporal attention inside it, fullgraph=True), reused
    for 40+ frames through several ring wraps with no recompilation, equal to eager to 1e-5 (fp32)."""
    n = 44
    clip = frames(n, size=SIZE)

    def make():
        m = _live2diff(warmup=4, window=8, t_index_list=[30, 36, 42])
        for p in m.stream.ctl.processors:
            p.cache.requested = kernel
        return m

    ref = _run(make(), clip)
    m = make()
    got = _compiled_run(m, lambda m: m.stream.compile(backend="aot_eager"), clip, m.steady_state_frames - 1)
    _assert_equal(got, ref, n)


@pytest.mark.slow
def test_streamdiffusion_steady_call_compiles_whole_and_equals_eager():
    n = 40
    clip = frames(n, size=SIZE)
    ref = _run(_streamdiffusion(), clip)
    m = _streamdiffusion()
    got = _compiled_run(m, lambda m: m.compile(backend="aot_eager"), clip, m.steady_state_frames - 1)
    _assert_equal(got, ref, n)
