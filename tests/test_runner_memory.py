"""The runner keeps nothing per unit alive until the end of a run (memory flat across videos).

Each unit's two small pandas tables used to be kept until the run's end; alive between every unit's large
transient buffers they pinned holes in glibc's heap and a 400-unit run grew by ~50 MB per 100 units
(benchmarks/scale.py). The tables are now written to the unit store only and assembled from it at the end.
"""

import gc
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import eval.runner as runner_mod
from eval.cli import run_from_config
from tests.conftest import compose


def _alive_dataframes() -> int:
    gc.collect()
    return sum(isinstance(o, pd.DataFrame) for o in gc.get_objects())


def test_no_per_unit_tables_alive_during_the_run_and_the_tables_are_whole(tmp_path, monkeypatch):
    counts: list[int] = []
    seen: list = []
    original = runner_mod.Runner._unit

    def counted(self, method_name, video):
        out = original(self, method_name, video)
        seen.append(out)
        if len(seen) in (1, 12):  # a full gc scan is slow in a process that has imported torch: only two
            counts.append(_alive_dataframes())
        return out

    monkeypatch.setattr(runner_mod.Runner, "_unit", counted)
    overrides = [
        f"results_root={tmp_path / 'results'}",
        "method=[identity]",
        "+method.inv._target_=tests.fake_methods.DelayMethod",
        "+method.inv.delay=0",
        "dataset.num_videos=6",
        "dataset.num_frames=3",
        "dataset.height=16",
        "dataset.width=16",
        "metrics=none",
        "report.enabled=false",
        "runner.save_strips=false",
        "runner.xt_slices=false",
    ]
    s = run_from_config(compose(overrides), run_dir=tmp_path / "a", progress=False)
    assert len(s.units) == 12 and not s.failed
    # the old runner held two DataFrames per finished unit: 22 more after unit 12 than after unit 1
    assert len(counts) == 2 and counts[1] == counts[0], counts
    # the run's tables (assembled from the store) hold every unit's rows, in the units' order
    assert len(s.frames) == len(s.frames.drop_duplicates(["method", "video", "frame", "metric"]))
    per_unit = s.frames.groupby(["method", "video"], sort=False).frame.nunique()
    assert list(per_unit.index) == [(u.method, u.video) for u in s.units]
    assert (per_unit == 3).all()
    assert set(s.videos.groupby(["method", "video"]).size().index) == {(u.method, u.video) for u in s.units}

    # a fully cached re-run gives the same tables
    again = run_from_config(compose(overrides), run_dir=tmp_path / "b", progress=False)
    assert {u.status for u in again.units} == {"cached"}
    pd.testing.assert_frame_equal(again.frames, s.frames)
    pd.testing.assert_frame_equal(again.videos, s.videos)


_PEAKS = r"""
import gc, sys
from pathlib import Path
from eval.cli import run_from_config
from eval.timing import MemoryProbe
from tests.conftest import compose

root = Path(sys.argv[1])
for name, n in (("warm", 40), ("short", 40), ("long", 640)):
    cfg = compose([f"results_root={root / name}", "method=[identity]", "dataset.num_videos=1",
                   f"dataset.num_frames={n}", "dataset.height=64", "dataset.width=64", "metrics=none",
                   "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
                   "report.enabled=false", "runner.warmup_frames=0"])
    gc.collect()
    probe = MemoryProbe("cpu")
    s = run_from_config(cfg, run_dir=root / f"run_{name}", progress=False)
    assert not s.failed and s.units[0].n_frames == n
    print(name, probe.peak_mb())
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_a_units_memory_does_not_grow_with_the_clip(tmp_path):
    """Memory bounded in video length: 16x the frames (640 at 64x64, 30 MiB a copy of the clip) must not grow a
    run's resident high-water mark by half a copy of the clip (the runner that held the clip, its outputs and
    their stack grew by 106 MiB here). glibc's mmap threshold is fixed for the measurement: its dynamic one let
    the heap fragment by ~36 KB a frame (17 MiB here) with nothing held (benchmarks/memory_vs_length.py
    --runner reports both)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _PEAKS, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    peaks = dict(
        line.split() for line in out.stdout.splitlines() if line.split()[:1] in (["short"], ["long"])
    )
    short, long = float(peaks["short"]), float(peaks["long"])
    clip_mib = 640 * 3 * 64 * 64 * 4 / 2**20
    assert long - short < clip_mib / 2, (short, long, clip_mib)


def test_the_runner_streams_a_video_that_can_stream_and_never_loads_it_whole(tmp_path, monkeypatch):
    """A dataset's ``stream`` is what the runner decodes (frame by frame); ``load`` (the whole clip) is not called."""
    from eval.datasets.base import Video

    def refuse(self):
        raise AssertionError("the runner materialised the whole clip (Video.load)")

    monkeypatch.setattr(Video, "load", refuse)
    overrides = [
        f"results_root={tmp_path / 'r'}",
        "method=[identity]",
        "dataset.num_videos=1",
        "dataset.num_frames=20",
        "dataset.height=16",
        "dataset.width=16",
        "metrics=none",
        "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
        "report.enabled=false",
    ]
    s = run_from_config(compose(overrides), run_dir=tmp_path / "a", progress=False)
    assert not s.failed and s.units[0].n_frames == 20
    assert s.frames[s.frames.metric == "frame_diff"].value.notna().sum() == 19
