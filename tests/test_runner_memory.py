"""The runner keeps nothing per unit alive until the end of a run (memory flat across videos).

Each unit's two small pandas tables used to be kept until the run's end; alive between every unit's large
transient buffers they pinned holes in glibc's heap and a 400-unit run grew by ~50 MB per 100 units
(benchmarks/scale.py). The tables are now written to the unit store only and assembled from it at the end.
"""

import gc

import pandas as pd

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
