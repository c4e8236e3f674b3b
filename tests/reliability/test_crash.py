"""Crash safety: SIGKILL at chosen points of a multi-method run, then resume; concurrent runs on one results root;
pickles that would run code.

Kill points are fault hooks in eval/store.py (``LIVE2DIFF_BENCH_FAULT=point:n`` SIGKILLs the run the n-th time it
reaches ``point``): before a unit starts, between a unit's files, just before and after its ``unit.json``, after a
kept stream's outputs, and between a temporary file and its ``os.replace`` (early, mid-run, in the final tables).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, run_config

TIMING = {"latency_ms", "call_ms", "fps", "steady_fps", "first_frame_latency_ms", "peak_mem_mb"}
RUN = [
    "method=[identity]",
    "+method.count._target_=tests.fake_methods.CountingMethod",
    "dataset.num_videos=3",
    "dataset.num_frames=4",
    "metrics=none",
    "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
    "runner.keep_outputs=true",
    "report.enabled=false",
]


def run_process(tmp_path, name, *extra, fault=None):
    """``python run_eval.py`` as a real process (the one that is killed), ``fault`` its kill point."""
    e = {k: v for k, v in os.environ.items() if k != "LIVE2DIFF_BENCH_FAULT"}
    if fault:
        e["LIVE2DIFF_BENCH_FAULT"] = fault
    cmd = [
        sys.executable,
        "run_eval.py",
        f"results_root={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / name}",
    ]
    return subprocess.run([*cmd, *RUN, *extra], cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)


def run_here(tmp_path, name):
    """The same run in this process, without a kill point: an uninterrupted run, or the resume after a kill (as a
    fresh process would see the files: no digest cached from before)."""
    assert "LIVE2DIFF_BENCH_FAULT" not in os.environ
    summary = run_config(tmp_path, *RUN, name=name, fresh=True)
    assert not summary.failed, [(u.method, u.video, u.error) for u in summary.failed]
    return summary


def quality(run_dir):
    """The run's numbers that do not depend on wall-clock time, in a canonical order."""
    out = {}
    for table in ("videos", "frames"):
        df = pd.read_parquet(run_dir / f"{table}.parquet")
        df = df[~df.metric.isin(TIMING) & ~df.metric.str.contains("latency|_ms|fps")]
        out[table] = df.sort_values([c for c in df.columns if c != "value"]).reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("reference")
    run_here(d, "run")
    return quality(d / "run")


def finished_keys(tmp_path):
    return {json.loads(p.read_text())["key"] for p in (tmp_path / "results" / "units").glob("*/*/unit.json")}


def kill_then_resume(tmp_path, reference, fault):
    crashed = run_process(tmp_path, "crashed", fault=fault)
    assert crashed.returncode == -signal.SIGKILL, f"{fault} was never reached: {crashed.stderr[-2000:]}"
    assert (tmp_path / "crashed" / "INCOMPLETE").exists()  # the killed run's folder says so
    done = finished_keys(tmp_path)
    run_here(tmp_path, "resumed")
    units = pd.read_parquet(tmp_path / "resumed" / "units.parquet")
    assert len(units) == 6 and set(units.status) <= {"ok", "cached", "rescored"}
    for _, u in units.iterrows():  # nothing finished before the kill is computed again
        assert (u.status == "cached") == (u.key in done), (fault, u.video, u.status)
    got = quality(tmp_path / "resumed")
    for table in ("videos", "frames"):
        pd.testing.assert_frame_equal(got[table], reference[table])
    assert not (tmp_path / "resumed" / "INCOMPLETE").exists()
    return len(done)


FAST_POINTS = ["unit.before_done:3"]
SLOW_POINTS = [
    "atomic.before_replace:9",
    "unit.begin:1",
    "unit.begin:4",
    "unit.frames_written:2",
    "unit.before_done:1",
    "unit.done:2",
    "unit.done:6",
    "stream.outputs_written:4",
    "atomic.before_replace:3",
    "atomic.before_replace:20",
    "atomic.before_replace:40",
]


@pytest.mark.parametrize("fault", FAST_POINTS)
def test_kill_then_resume_equals_an_uninterrupted_run(tmp_path, reference, fault):
    kill_then_resume(tmp_path, reference, fault)


@pytest.mark.slow
@pytest.mark.parametrize("fault", SLOW_POINTS)
def test_kill_then_resume_at_more_points(tmp_path, reference, fault):
    kill_then_resume(tmp_path, reference, fault)


@pytest.mark.slow
def test_two_concurrent_runs_compute_each_unit_once(tmp_path):
    log = tmp_path / "computed.log"
    args = [
        f"results_root={tmp_path / 'results'}",
        "method=[]",
        "+method.slow._target_=tests.reliability.helpers.SlowLogged",
        f"+method.slow.log={log}",
        "+method.slow.delay=0.15",
        "runner.warmup_frames=0",
        "dataset.num_videos=3",
        "dataset.num_frames=6",
        "metrics=none",
        "report.enabled=false",
    ]
    env = {k: v for k, v in os.environ.items() if k != "LIVE2DIFF_BENCH_FAULT"}
    procs = []
    for name in ("a", "b"):
        cmd = [sys.executable, "run_eval.py", *args, f"hydra.run.dir={tmp_path / name}"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        time.sleep(0.5)
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    computed = log.read_text().splitlines()
    assert len(computed) == 3 and len(set(computed)) == 3, computed  # each video once, by one of the two runs
    statuses = pd.concat([pd.read_parquet(tmp_path / n / "units.parquet") for n in ("a", "b")])
    assert sorted(statuses.status) == ["cached"] * 3 + ["ok"] * 3


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def test_crafted_pickles_are_refused(tmp_path, monkeypatch):
    """A results root or a weights file from someone else must not run code: kept outputs load without pickle,
    weights with ``weights_only=True``."""
    import torch

    from eval.store import UnitStore, _record_digest, sha256
    from eval.weights import load_state_dict

    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    store = UnitStore(tmp_path / "results")
    d = store.stream_path("ab" * 12)
    d.mkdir(parents=True)
    np.save(d / "outputs.npy", np.array([_Evil()], dtype=object), allow_pickle=True)
    # with digests that match: whoever crafted it can compute them, so the load itself must refuse the pickle
    record = {"push_start": [], "call_s": [], "emit_time": [], "flush_s": 0, "peak_mem_mb": 0}
    record["files"] = {"outputs.npy": sha256((d / "outputs.npy").read_bytes())}
    (d / "stream.json").write_text(json.dumps({**record, "digest": _record_digest(record)}))
    with pytest.raises(ValueError, match="allow_pickle"):
        store.read_stream("ab" * 12)
    ckpt = tmp_path / "weights.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": _Evil()}))
    # UnpicklingError or the loader's own error
    with pytest.raises(Exception, match="(?i)refuse|weights.only"):
        load_state_dict(ckpt, "metrics.lpips.weights", "LPIPS")
    with open(ckpt, "wb") as f:
        torch.save({"w": _Evil()}, f)
    # UnpicklingError or the loader's own error
    with pytest.raises(Exception, match="(?i)refuse|weights.only"):
        load_state_dict(ckpt, "metrics.lpips.weights", "LPIPS")
    assert not marker.exists(), "a pickle ran code"
