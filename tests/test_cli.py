"""The entry points as a user runs them: run_eval.py (single run, multirun, shards) and python -m eval.report
(one real process; the rest in this process through the ``run_py`` fixture, tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT


def sh(*args, cwd=ROOT):
    p = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def test_run_eval_prints_table_and_writes_results(tmp_path):
    """The one real ``run_eval.py`` process of the fast suite (the others run it in this process: ``run_py``), on
    the fast path (identity; the default metrics and report). The default methods run end to end in this process in
    tests/test_paper_experiments.py::test_paper_table1_runs_on_the_tiny_model (paper_table1 = the default methods)."""
    rc, out = sh(
        "run_eval.py",
        f"results_root={tmp_path}",
        "method=[identity]",
        "dataset.num_videos=2",
        "dataset.num_frames=5",
    )
    assert rc == 0, out
    assert "| method |" in out and "identity" in out
    runs = list((tmp_path / "default").iterdir())
    assert len(runs) == 1 and (runs[0] / "report.html").is_file()
    assert f"results: {runs[0]}" in out


@pytest.mark.slow  # two run_eval.py processes + a merge (~18 s); tests/reliability/test_scaleout.py covers it fast
def test_shards_then_merge_report(tmp_path):
    for shard in (0, 1):
        rc, out = sh(
            "run_eval.py",
            f"results_root={tmp_path}",
            "experiment_name=sharded",
            "dataset.num_videos=3",
            "dataset.num_frames=4",
            "method=[identity]",
            f"dataset.shard={shard}",
            "dataset.num_shards=2",
            f"hydra.run.dir={tmp_path}/sharded/shard{shard}",
            "report.print=false",
        )
        assert rc == 0, out
    shard_videos = [
        pd.read_parquet(tmp_path / "sharded" / f"shard{s}" / "units.parquet").video.tolist() for s in (0, 1)
    ]
    assert sorted(shard_videos[0] + shard_videos[1]) == ["synthetic_000", "synthetic_001", "synthetic_002"]
    merged = tmp_path / "merged"
    rc, out = sh(
        "-m",
        "eval.report",
        str(tmp_path / "sharded" / "shard0"),
        str(tmp_path / "sharded" / "shard1"),
        "--out",
        str(merged),
    )
    assert rc == 0, out
    per_video = pd.read_csv(merged / "per_video.csv")
    assert sorted(per_video.video) == ["synthetic_000", "synthetic_001", "synthetic_002"]
    assert (merged / "report.html").is_file() and "3 videos" in (merged / "summary.md").read_text()


def test_multirun_sweep(tmp_path, run_py):
    r = run_py(
        "run_eval.py",
        "-m",
        f"results_root={tmp_path}",
        "dataset.num_videos=1",
        "dataset.num_frames=4",
        "seed=1,2",
        "method=[identity]",
        "metrics=none",  # the sweep, its jobs and the merges are under test (timing columns only)
        f"hydra.sweep.dir={tmp_path}/sweep",
        "report.print=false",
    )
    assert r.returncode == 0, r.stderr
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name != "report")
    assert jobs == ["0", "1"]  # (report/: the merged report, eval/sweep.py)
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "summary.md").is_file()
    # the README's merge command, as a shell expands ``multirun_*/*`` (multirun.yaml included)
    jobs = sorted(str(p) for p in (tmp_path / "sweep").glob("*"))
    assert any(j.endswith("multirun.yaml") for j in jobs)
    r = run_py("-m", "eval.report", *jobs, "--out", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (tmp_path / "merged" / "summary.md").read_text()
    assert "| identity[seed=1] |" in summary and "| identity[seed=2] |" in summary  # settings kept apart


def test_report_on_a_non_result_dir_is_a_clear_error(tmp_path, run_py):
    r = run_py("-m", "eval.report", str(tmp_path))
    assert r.returncode == 2 and "not a result folder" in r.stdout + r.stderr
