"""Live mode on a fake clock: a method of known cost advances the clock, so every figure has an exact expected value
and nothing sleeps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval import live
from eval.live import run_live_stream
from eval.timing import MethodContractError, summarise


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t
        self.slept = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        assert dt >= 0
        self.t += dt
        self.slept += dt


class CostMethod:
    """Takes ``cost`` seconds of fake time per push; emits each frame ``delay`` pushes later."""

    lookahead = 0
    device = "cpu"

    def __init__(self, clock: FakeClock, cost: float, delay: int = 0) -> None:
        self.clock, self.cost, self.delay = clock, cost, delay
        self.pending: list = []
        self.seen: list[int] = []

    def prepare(self, prompt, *, height, width, seed):
        self.pending = []

    def push(self, index, frame):
        self.clock.t += self.cost
        self.seen.append(index)
        self.pending.append((index, frame * 0.5))
        return [self.pending.pop(0)] if len(self.pending) > self.delay else []

    def flush(self):
        out, self.pending = self.pending, []
        return out

    def reset(self):
        self.pending = []


def frames(n: int = 30) -> torch.Tensor:
    # frame i is constant i / n, so an output tells which source frame it came from
    return (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()


def run(cost: float, n: int = 30, fps: float = 10.0, **kw):
    clock = FakeClock()
    method = CostMethod(clock, cost, kw.pop("delay", 0))
    rec = run_live_stream(method, frames(n), fps, clock=clock, sleep=clock.sleep, **kw)
    return rec, summarise(rec)[1], method


@pytest.mark.parametrize("cost", [0.15, 0.25, 0.35, 0.55])
def test_drop_ratio_matches_expected_when_slower_than_the_source(cost):
    n, fps = 60, 10.0
    rec, vm, _ = run(cost, n=n, fps=fps)
    every = math.ceil(cost * fps)  # a frame is taken, then the next ceil(c/T)-1 arrive while busy
    processed = len(range(0, n, every))
    assert vm["drop_ratio"] == pytest.approx(1 - processed / n)
    assert vm["output_fps"] == pytest.approx(fps / every)
    assert vm["lag_p50_ms"] == pytest.approx(cost * 1e3)
    assert vm["lag_p95_ms"] == pytest.approx(cost * 1e3)
    assert vm["steady_fps"] == pytest.approx(1 / cost) and vm["call_p50_ms"] == pytest.approx(cost * 1e3)
    dropped = np.array(summarise(rec)[0]["dropped"])
    assert np.flatnonzero(dropped == 0).tolist() == list(range(0, n, every))


def test_no_drops_when_the_method_is_fast():
    rec, vm, method = run(0.04, n=30, fps=10.0)
    assert vm["drop_ratio"] == 0
    assert vm["output_fps"] == pytest.approx(10.0)
    assert vm["lag_p95_ms"] == pytest.approx(40.0)
    assert method.seen == list(range(30))
    assert np.isfinite(rec.emit_time).all()


def test_queue_policy_drops_nothing_and_lag_grows():
    cost, fps, n = 0.15, 10.0, 20
    rec, vm, _ = run(cost, n=n, fps=fps, policy="queue")
    assert vm["drop_ratio"] == 0
    lag = np.array(summarise(rec)[0]["lag_ms"]) / 1e3
    # frame i is pushed when frame i-1 is done: lag_i = (i + 1) c - i T
    assert lag == pytest.approx([(i + 1) * cost - i / fps for i in range(n)])
    assert np.all(np.diff(lag) > 0)
    assert vm["output_fps"] == pytest.approx(1 / cost)


def test_latest_policy_takes_the_newest_arrived_frame():
    rec, vm, _ = run(0.23, n=40, fps=10.0, policy="latest")
    taken = np.flatnonzero(np.array(summarise(rec)[0]["dropped"]) == 0).tolist()
    assert taken[:5] == [0, 2, 4, 6, 9]  # free at .23 -> frame 2 (.2), .46 -> 4, .69 -> 6, .92 -> 9
    assert vm["output_fps"] == pytest.approx(1 / 0.23)
    drop_policy = run(0.23, n=40, fps=10.0)[1]
    assert vm["drop_ratio"] < drop_policy["drop_ratio"]  # never idles, so more frames get through


def test_a_dropped_slot_shows_the_last_output():
    n = 12
    rec, _, _ = run(0.25, n=n, fps=10.0)  # processes 0, 3, 6, 9
    src = frames(n)
    for j, out in enumerate(rec.outputs):
        assert torch.equal(out, src[(j // 3) * 3] * 0.5)


def test_method_sees_consecutive_indices_and_pipeline_delay_adds_to_lag():
    rec, vm, method = run(0.25, n=12, fps=10.0, delay=1)
    assert method.seen == [0, 1, 2, 3]
    lag = np.array(summarise(rec)[0]["lag_ms"])
    # a frame is emitted by the next push (taken 0.3 s later, done 0.25 s after that); the last one by flush
    assert lag[[0, 3, 6]] == pytest.approx([550.0, 550.0, 550.0])
    assert lag[9] == pytest.approx(250.0)
    assert vm["drop_ratio"] == pytest.approx(8 / 12)


class WarmupBurst(CostMethod):
    """Holds the first ``warmup`` frames and releases them together (as Live2Diff's joint warm-up pass does)."""

    warmup = 4

    def push(self, index, frame):
        self.clock.t += self.cost
        self.pending.append((index, frame))
        if index + 1 < self.warmup:
            return []
        out, self.pending = self.pending, []
        return out


def test_a_warmup_burst_does_not_inflate_the_output_rate():
    clock = FakeClock()
    rec = run_live_stream(WarmupBurst(clock, 0.01), frames(20), 10.0, clock=clock, sleep=clock.sleep)
    vm = summarise(rec)[1]
    assert vm["drop_ratio"] == 0
    assert vm["output_fps"] == pytest.approx(10.0)  # 16 frames after the burst, one per 0.1 s
    lag = np.array(summarise(rec)[0]["lag_ms"])
    assert lag[:4] == pytest.approx([310.0, 210.0, 110.0, 10.0])


def test_fps_override_and_waiting_for_the_source():
    clock = FakeClock()
    method = CostMethod(clock, 0.01)
    rec = run_live_stream(method, frames(10), 10.0, fps=5.0, clock=clock, sleep=clock.sleep)
    assert summarise(rec)[1]["source_fps"] == 5.0
    assert summarise(rec)[1]["output_fps"] == pytest.approx(5.0)
    assert clock.slept == pytest.approx(9 * 0.2 - 9 * 0.01)  # idle between arrivals


def test_bad_settings_and_broken_methods_say_what_is_wrong():
    clock = FakeClock()
    with pytest.raises(ValueError, match="Did you mean 'queue'"):
        run_live_stream(
            CostMethod(clock, 0.1), frames(3), 10.0, policy="qeue", clock=clock, sleep=clock.sleep
        )
    with pytest.raises(ValueError, match="runner.live.fps"):
        run_live_stream(CostMethod(clock, 0.1), frames(3), float("nan"), clock=clock, sleep=clock.sleep)

    class Silent(CostMethod):
        def flush(self):
            return []

    with pytest.raises(MethodContractError, match="never emitted"):
        run_live_stream(Silent(clock, 0.1, delay=1), frames(3), 10.0, clock=clock, sleep=clock.sleep)


def test_runner_live_mode_rows(tmp_path, monkeypatch):
    """Through the Runner: live figures become result rows and the quality metrics see the repeated frames."""
    from eval.datasets.synthetic import SyntheticDataset
    from eval.run_types import RunnerSettings
    from eval.runner import Runner
    from eval.scoring import build_metrics
    from eval.store import UnitStore

    clock = FakeClock()
    monkeypatch.setattr(live, "_clock", clock)
    monkeypatch.setattr(live, "_sleep", clock.sleep)
    target = "tests.test_live.ClockCost"
    videos = SyntheticDataset(num_videos=1, num_frames=12, height=16, width=16, fps=10.0).videos()
    metrics_cfg = {"frame_diff": {"_target_": "eval.metrics.frame_diff.MeanAbsFrameDiff"}}
    settings = RunnerSettings.from_config(
        {"mode": "live", "warmup_frames": 0, "save_strips": False, "live": {"fps": None, "policy": "drop"}}
    )
    runner = Runner(
        {"slow": {"_target_": target}},
        videos,
        build_metrics(metrics_cfg),
        metrics_cfg,
        UnitStore(tmp_path),
        tmp_path / "run",
        settings,
        progress=False,
    )
    summary = runner.run()
    assert not summary.failed, summary.failed
    v = summary.videos.set_index("metric")["value"]
    assert v["drop_ratio"] == pytest.approx(8 / 12)
    assert v["lag_p50_ms"] == pytest.approx(250.0)
    fd = summary.frames.query("metric == 'frame_diff'").sort_values("frame")["value"].to_numpy()
    assert fd[1] == 0 and fd[2] == 0  # slots 1 and 2 repeat frame 0's output
    assert set(summary.frames["metric"]) >= {"lag_ms", "dropped"}


class ClockCost(CostMethod):
    """Built by Hydra from a config, so it finds the fake clock where the test installed it."""

    def __init__(self) -> None:
        super().__init__(live._clock, 0.25)
