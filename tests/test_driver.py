"""The one stream driver (eval.timing.run_stream) as every mode uses it: what is inside the timed call, the contract
checks in offline, live and gate mode, the steady-state warm-up and the per-unit peak memory."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from eval.gate import measure
from eval.live import run_live_stream
from eval.timing import MemoryProbe, MethodContractError, run_stream, summarise, warm_up
from tests.fake_methods import DelayMethod, DuplicateMethod, FakeClock, NanMethod


class SlowCopy(torch.Tensor):
    """A frame whose copy to the CPU takes ``COPY_S`` of fake time (as a GPU tensor's transfer does)."""

    clock: FakeClock | None = None
    COPY_S = 0.5

    def detach(self):
        return self

    def to(self, *args, **kwargs):
        SlowCopy.clock.advance(self.COPY_S)
        return self.as_subclass(torch.Tensor).to(*args, **kwargs)


class DeviceOutputs(DelayMethod):
    """Costs ``cost`` per push and returns its outputs as tensors whose CPU copy is slow (a baseline that returns
    device tensors, leaving the copy to whoever reads them)."""

    def push(self, index, frame):
        return [(i, out.as_subclass(SlowCopy)) for i, out in super().push(index, frame)]

    def flush(self):
        return [(i, out.as_subclass(SlowCopy)) for i, out in super().flush()]


def test_the_copy_to_the_cpu_is_inside_the_timed_call():
    clock = FakeClock()
    SlowCopy.clock = clock
    method = DeviceOutputs(delay=0, clock=clock, cost=1.0)
    frames = torch.rand(4, 3, 8, 8)
    rec = run_stream(method, frames, clock=clock)
    assert rec.call_s == pytest.approx([1.5] * 4)  # push (1 s) + the driver's copy of its emission (0.5 s)
    assert rec.latency_s == pytest.approx([1.5] * 4)
    for out in rec.outputs:  # what the metrics get: plain CPU float32 tensors
        assert type(out) is torch.Tensor and out.device.type == "cpu" and out.dtype == torch.float32
    assert torch.allclose(torch.stack(rec.outputs), 1 - frames)


def test_a_delayed_emission_is_copied_in_the_call_that_emits_it():
    clock = FakeClock()
    SlowCopy.clock = clock
    rec = run_stream(DeviceOutputs(delay=1, clock=clock, cost=1.0), torch.rand(3, 3, 8, 8), clock=clock)
    assert rec.call_s == pytest.approx([1.0, 1.5, 1.5])  # the first push emits nothing, so copies nothing
    assert rec.flush_s == pytest.approx(0.5)


class FakeLiveClock(FakeClock):
    def sleep(self, dt: float) -> None:
        self.advance(dt)


def test_every_mode_rejects_a_method_that_breaks_the_contract():
    frames = torch.rand(4, 3, 8, 8)
    with pytest.raises(MethodContractError, match="emitted twice"):
        run_stream(DuplicateMethod(), frames)
    clock = FakeLiveClock()
    with pytest.raises(MethodContractError, match="emitted twice"):
        run_live_stream(DuplicateMethod(), frames, 10.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(MethodContractError, match="emitted twice"):
        measure(
            {"dup": DuplicateMethod()}, [("p", frames)], repeats=1, warmup_frames=0, calibrate=lambda: 0.0
        )

    class Silent(DelayMethod):
        def flush(self):
            return []

    with pytest.raises(MethodContractError, match="never emitted"):
        measure(
            {"silent": Silent(delay=1)}, [("p", frames)], repeats=1, warmup_frames=0, calibrate=lambda: 0.0
        )

    class Ahead(NanMethod):  # emits a frame it has not been given yet
        def push(self, index, frame):
            return [(index + 1, frame)] if index == 0 else []

    with pytest.raises(MethodContractError, match="never pushed"):
        run_stream(Ahead(), frames)


def test_live_and_offline_figures_come_from_one_summary():
    """Offline, a stream has no live figures; paced, fps is the achieved output rate (not frames / total time)."""
    clock = FakeLiveClock()
    offline = summarise(
        run_stream(DelayMethod(delay=0, clock=clock, cost=0.25), torch.rand(8, 3, 4, 4), clock=clock)
    )
    assert "drop_ratio" not in offline[1] and "lag_ms" not in offline[0]
    assert offline[1]["fps"] == pytest.approx(4.0)
    rec = run_live_stream(
        DelayMethod(delay=0, clock=clock, cost=0.25),
        torch.rand(8, 3, 4, 4),
        10.0,
        clock=clock,
        sleep=clock.sleep,
    )
    per_frame, per_video = summarise(rec)
    assert per_video["drop_ratio"] == pytest.approx(5 / 8) and per_video["fps"] == per_video["output_fps"]
    assert per_video["call_p50_ms"] == pytest.approx(250.0)  # NaN push times of dropped frames are ignored
    assert np.isnan(per_frame["call_ms"][1]) and per_frame["dropped"][1] == 1


class Counting(DelayMethod):
    """Counts pushes and prepares; declares its steady state after ``steady`` pushes."""

    def __init__(self, steady: int = 1, delay: int = 0) -> None:
        super().__init__(delay=delay)
        self.steady_state_frames = steady
        self.pushes: list[int] = []
        self.prepared: list[str] = []

    def prepare(self, prompt, *, height, width, seed):
        super().prepare(prompt, height=height, width=width, seed=seed)
        self.prepared.append(prompt)
        self.pushes.append(0)

    def push(self, index, frame):
        self.pushes[-1] += 1
        return super().push(index, frame)


class SteadyNine(Counting):
    """Built by Hydra in the runner test; records its instances."""

    built: list[Counting] = []

    def __init__(self) -> None:
        super().__init__(steady=9, delay=2)
        SteadyNine.built.append(self)


@pytest.mark.parametrize("steady, wanted, expected", [(7, 2, 7), (1, 2, 2), (12, 0, 12), (3, 5, 5)])
def test_warm_up_reaches_the_declared_steady_state(steady, wanted, expected):
    method = Counting(steady=steady, delay=2)
    frames = torch.rand(
        5, 3, 4, 4
    )  # shorter than some steady states: the clip is pushed again from the start
    assert warm_up(method, frames, wanted, prompt="warm-up", seed=0) == expected
    assert method.pushes == [expected] and method.pending == []  # reset after the warm-up


def test_the_runner_warms_a_method_up_to_its_steady_state_untimed(tmp_path):
    from eval.datasets.synthetic import SyntheticDataset
    from eval.runner import Runner, RunnerSettings
    from eval.store import UnitStore

    SteadyNine.built = []
    videos = SyntheticDataset(num_videos=2, num_frames=6, height=16, width=16).videos()
    settings = RunnerSettings.from_config({"warmup_frames": 2, "save_strips": False})
    runner = Runner(
        {"m": {"_target_": "tests.test_driver.SteadyNine"}},
        videos,
        {},
        {},
        UnitStore(tmp_path),
        tmp_path / "run",
        settings,
        progress=False,
    )
    summary = runner.run()
    assert not summary.failed, summary.failed
    (method,) = SteadyNine.built
    # 9 untimed pushes (its steady state, above runner.warmup_frames=2), then each video on a fresh state
    assert method.prepared == ["warm-up", videos[0].prompt, videos[1].prompt]
    assert method.pushes == [9, 6, 6]
    v = summary.videos.query("metric == 'first_frame_latency_ms'")
    assert len(v) == 2  # first-frame latency is still measured per video


class Hoard(NanMethod):
    """Holds ``mb`` MiB of touched memory for the length of the stream."""

    def __init__(self, mb: int) -> None:
        super().__init__(bad=-1)
        self.mb, self.held = mb, None

    def push(self, index, frame):
        if self.held is None:
            self.held = torch.ones(self.mb * 2**18)  # float32: mb MiB, written so it is resident
        return [(index, frame)]

    def reset(self):
        self.held = None


def test_peak_memory_is_per_unit_not_the_process_total():
    frames = torch.rand(4, 3, 8, 8)
    big = run_stream(Hoard(200), frames)
    assert big.peak_mem_mb >= 150  # the unit's own growth shows
    small = run_stream(NanMethod(bad=-1), frames)
    assert (
        small.peak_mem_mb < 50
    )  # not the process RSS (hundreds of MiB with torch loaded), not the last unit's
    probe = MemoryProbe("cpu")
    assert probe.peak_mb() < 1.0


class Transient(NanMethod):
    """Allocates ``mb`` MiB inside each push and frees it before returning: RSS sampled after the call never sees it."""

    def __init__(self, mb):
        super().__init__(bad=-1)
        self.mb = mb

    def push(self, index, frame):
        scratch = torch.ones(self.mb * 2**18)  # written, so resident while the call runs
        del scratch
        return [(index, frame)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_peak_memory_sees_what_a_call_allocates_and_frees():
    rec = run_stream(Transient(100), torch.rand(3, 3, 8, 8))
    assert rec.peak_mem_mb >= 80, rec.peak_mem_mb  # sampled after each call it read ~0


@pytest.mark.parametrize(
    "name, expected",
    [
        ("identity", 1),
        ("per_frame_img2img", 1),
        ("streamdiffusion", 3),  # len(t_index_list): the stream batch is full
        ("animatediff_window", 32),  # lookahead + 1: its first output (windows averaged at every step)
        ("live2diff", 8 + 3),  # warmup block + a full stream batch
    ],
)
def test_methods_declare_their_steady_state(name, expected):
    """The declared count is where the steady-state path starts: the k-th push is the first whose emissions come
    from a full stream batch / window (it emits; every push after it emits too, for the streaming ones)."""
    from eval.datasets.synthetic import generate_clip
    from eval.interface import method_steady_state_frames
    from tests.test_method_contract import H, W, build

    m = build(name)
    k = method_steady_state_frames(m)
    assert k == expected
    frames = generate_clip(k + 3, H, W, seed=1).frames
    m.prepare("p", height=H, width=W, seed=0)
    emitted = [m.push(i, f) for i, f in enumerate(frames)]
    m.flush()
    m.reset()
    assert emitted[k - 1], f"{name}: push {k} (its declared steady state) emits nothing"
    if name != "animatediff_window":
        assert all(len(e) == 1 for e in emitted[k:]), (
            f"{name}: not one output per push after its steady state"
        )
    if name in ("streamdiffusion", "live2diff"):
        assert [j for j, _ in emitted[k - 1]] == [k - 3]  # the first frame through the full stream batch


class CudaHoard(NanMethod):
    """Allocates ``mb`` MiB on the GPU during its stream and returns its outputs as GPU tensors."""

    device = "cuda"

    def __init__(self, mb: int) -> None:
        super().__init__(bad=-1)
        self.mb, self.held = mb, None

    def push(self, index, frame):
        if self.mb and self.held is None:
            self.held = torch.ones(self.mb * 2**18, device="cuda")
        return [(index, frame.to("cuda"))]

    def reset(self):
        self.held = None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_memory_is_reset_per_unit_and_outputs_come_back_to_the_cpu():
    frames = torch.rand(4, 3, 8, 8)
    hoard = CudaHoard(256)
    big = run_stream(hoard, frames)
    assert big.peak_mem_mb >= 256
    hoard.reset()  # as the runner does between units
    small = run_stream(CudaHoard(0), frames)  # a later unit does not inherit the earlier one's peak
    assert small.peak_mem_mb < 16
    assert all(o.device.type == "cpu" and o.dtype == torch.float32 for o in small.outputs)


class Buffering:
    """Free pushes while it fills a buffer of ``steady_state_frames`` frames, then ``cost`` per push, with all the
    work of every ``burst`` pushes done in the last of them (a window method's bursty calls)."""

    lookahead = 0

    def __init__(self, clock: FakeClock, buffer: int, cost: float, burst: int = 1):
        self.clock, self.buffer, self.cost, self.burst = clock, buffer, cost, burst
        self.steady_state_frames = buffer
        self.n = 0

    def prepare(self, prompt, *, height, width, seed):
        self.n = 0

    def push(self, index, frame):
        self.n += 1
        if self.n > self.buffer and (self.n - self.buffer) % self.burst == 0:
            self.clock.advance(self.cost * self.burst)
        return [(index, frame)]

    def flush(self):
        return []

    def reset(self):
        pass


@pytest.mark.parametrize("burst", [1, 4])
def test_steady_fps_leaves_out_the_pushes_before_the_steady_state_and_charges_bursts(burst):
    clock = FakeClock()
    rec = run_stream(Buffering(clock, buffer=8, cost=0.1, burst=burst), torch.rand(24, 3, 4, 4), clock=clock)
    assert rec.steady_from == 8
    # 16 steady pushes cost 1.6 s in all: 10 FPS (a median of per-call times would give 0 s -> inf, or 0 s
    # -> inf for the bursty one, and the first 8 free pushes would push any average up)
    assert summarise(rec)[1]["steady_fps"] == pytest.approx(10.0)


def test_steady_fps_is_empty_when_the_stream_never_reached_its_steady_state():
    clock = FakeClock()
    rec = run_stream(Buffering(clock, buffer=8, cost=0.1), torch.rand(8, 3, 4, 4), clock=clock)
    assert np.isnan(summarise(rec)[1]["steady_fps"])
