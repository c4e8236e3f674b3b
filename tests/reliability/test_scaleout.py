"""Scale-out on Hydra's launchers: shards split videos deterministically and disjointly, shard folders merge into
the tables one process writes, sweeps over method lists work, and a sweep ends with one merged report."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from eval import results
from eval.cli import check_overrides, run_from_config
from eval.datasets.synthetic import SyntheticDataset
from tests.conftest import ROOT, compose

TIMING = ("latency", "_ms", "fps", "peak_mem")


def quality(videos: pd.DataFrame) -> pd.DataFrame:
    df = videos[~videos.metric.str.contains("|".join(TIMING))][["method", "video", "metric", "value"]]
    return df.sort_values(["method", "video", "metric"]).reset_index(drop=True)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_are_deterministic_disjoint_and_complete(n):
    every = [v.name for v in SyntheticDataset(num_videos=7, num_frames=2).videos()]
    shards = [
        [v.name for v in SyntheticDataset(num_videos=7, num_frames=2, shard=i, num_shards=n).videos()]
        for i in range(n)
    ]
    again = [
        [v.name for v in SyntheticDataset(num_videos=7, num_frames=2, shard=i, num_shards=n).videos()]
        for i in range(n)
    ]
    assert shards == again
    assert sorted(sum(shards, [])) == sorted(every) and len(set(sum(shards, []))) == 7


def test_merged_shards_equal_one_process(tmp_path):
    base = [
        "method=[identity]",
        "+method.inv._target_=tests.fake_methods.DelayMethod",
        "dataset.num_videos=3",
    ]
    base += ["dataset.num_frames=4", "report.enabled=false"]
    one = run_from_config(
        compose([*base, f"results_root={tmp_path / 'r1'}"]), run_dir=tmp_path / "one", progress=False
    )
    for i in (0, 1):
        cfg = compose(
            [*base, f"results_root={tmp_path / f'r_shard{i}'}", f"dataset.shard={i}", "dataset.num_shards=2"]
        )
        run_from_config(cfg, run_dir=tmp_path / f"shard{i}", progress=False)
    merged = results.load_runs([tmp_path / "shard0", tmp_path / "shard1"])
    pd.testing.assert_frame_equal(quality(merged.videos), quality(one.videos))
    assert sorted(merged.units.video.unique()) == ["synthetic_000", "synthetic_001", "synthetic_002"]


@pytest.mark.parametrize(
    "arg",
    ["method=[identity],[per_frame_img2img]", "method=identity,per_frame_img2img", "method=[identity,busy]"],
)
def test_method_sweeps_and_lists_pass_the_name_check(arg):
    assert check_overrides([arg]) is None


def test_misspelled_name_inside_a_sweep_of_lists_is_caught():
    msg = check_overrides(["method=[identity],[live2dif]"])
    assert msg and "Unknown method 'live2dif'" in msg and "live2diff" in msg


def sweep(tmp_path, *args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "LIVE2DIFF_BENCH_FAULT"}
    cmd = [
        sys.executable,
        "run_eval.py",
        "-m",
        f"results_root={tmp_path / 'results'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    cmd += ["dataset.num_frames=4", "metrics=none", "report.print=false", *args]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path / "sweep"


@pytest.mark.slow
def test_sweep_over_method_lists_with_merged_report(tmp_path):
    d = sweep(tmp_path, "method=[identity],[busy]", "dataset.num_videos=2")
    jobs = sorted(p.name for p in d.iterdir() if (p / "units.parquet").is_file())
    assert jobs == ["0", "1"]
    assert {pd.read_parquet(d / j / "units.parquet").method.unique()[0] for j in jobs} == {"identity", "busy"}
    per_method = pd.read_csv(d / "report" / "per_method.csv")  # written by the MergeReport callback
    assert set(per_method.method) == {"identity", "busy"}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_two_job_shard_sweep_on_a_launcher(tmp_path, launcher):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    d = sweep(
        tmp_path,
        f"hydra/launcher={launcher}",
        *extra,
        "method=[identity]",
        "dataset.num_videos=3",
        "dataset.num_shards=2",
        "dataset.shard=0,1",
    )
    shards = [pd.read_parquet(d / j / "units.parquet").video.tolist() for j in ("0", "1")]
    assert sorted(shards[0] + shards[1]) == ["synthetic_000", "synthetic_001", "synthetic_002"]
    assert not set(shards[0]) & set(shards[1])
    assert "3 videos" in (d / "report" / "summary.md").read_text()
