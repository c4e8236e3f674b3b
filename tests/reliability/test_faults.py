"""Faults lose nothing and say what happened: a damaged cached unit is recomputed (never served, never fatal)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from tests.conftest import run_config

RUN = [
    "method=[identity]",
    "dataset.num_videos=2",
    "dataset.num_frames=4",
    "metrics=none",
    "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
    "report.enabled=false",
]


def run(tmp_path, *overrides, name="run"):
    return run_config(tmp_path, *RUN, *overrides, name=name, fresh=True)


def flip_bit(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _fps_bit_flip(path):
    """A flip inside the stored fps value: the file still reads, as another number (the issue's 50.6 -> 101.3)."""
    import struct

    df = pd.read_parquet(path)
    value = float(df.loc[df.metric == "fps", "value"].iloc[0])
    at = path.read_bytes().find(struct.pack("<d", value))
    assert at >= 0
    flip_bit(path, at + 6)
    assert float(pd.read_parquet(path).loc[lambda d: d.metric == "fps", "value"].iloc[0]) != value


@pytest.mark.parametrize(
    "file, damage",
    [
        ("videos.parquet", _fps_bit_flip),
        ("strip.png", truncate),
        # slow: the same path as the two above (any file of the unit, or its record, against its digest)
        pytest.param("frames.parquet", truncate, marks=pytest.mark.slow),
        pytest.param(
            "unit.json",
            lambda p: p.write_text(p.read_text().replace('"n_frames": 4', '"n_frames": 5')),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_damaged_cached_unit_is_recomputed_with_a_warning_never_served(tmp_path, caplog, file, damage):
    first = run(tmp_path, name="a")
    truth = pd.read_parquet(first.run_dir / "videos.parquet")
    unit = next(u for u in first.units if u.video == "synthetic_001")
    unit_dir = tmp_path / "results" / "units" / unit.key[:2] / unit.key
    assert set(json.loads((unit_dir / "unit.json").read_text())["files"]) >= {"videos.parquet", "strip.png"}
    damage(unit_dir / file)
    with caplog.at_level(logging.WARNING):
        again = run(tmp_path, name="b")
    status = {u.video: u.status for u in again.units}
    assert status == {"synthetic_000": "cached", "synthetic_001": "ok"}, status
    warned = [r.getMessage() for r in caplog.records if "cannot be served" in r.getMessage()]
    assert len(warned) == 1 and "identity / synthetic_001" in warned[0] and file in warned[0], warned
    assert "recomputed: " in {u.video: u for u in again.units}["synthetic_001"].notes
    got = pd.read_parquet(again.run_dir / "videos.parquet")
    keep = ~truth.metric.str.contains("latency|_ms|fps|peak_mem")  # wall-clock figures differ between runs
    pd.testing.assert_frame_equal(
        got[keep.values].reset_index(drop=True), truth[keep.values].reset_index(drop=True)
    )
    assert [u.status for u in run(tmp_path, name="c").units] == ["cached", "cached"]  # whole again


def test_a_damaged_kept_stream_is_run_again_not_rescored(tmp_path, caplog):
    keep = ["runner.keep_outputs=true"]
    run(tmp_path, *keep, name="a")
    kept = list((tmp_path / "results" / "streams").rglob("outputs.npy"))
    assert len(kept) == 2
    for p in kept:
        flip_bit(p, p.stat().st_size - 3)  # a pixel of the last frame
    more = "+metrics.diff2._target_=eval.metrics.frame_diff.MeanAbsFrameDiff"  # metric-only change: re-score
    with caplog.at_level(logging.WARNING):
        s = run(tmp_path, *keep, more, name="b")
    assert [u.status for u in s.units] == ["ok", "ok"], [u.status for u in s.units]  # not "rescored"
    assert sum("outputs.npy does not match" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize(
    "keep",
    [
        # kept outputs: the full disk is met inside the unit (it became an error row and every later unit was
        # computed and thrown away, then the run crashed writing its tables with status.json still "running")
        ["runner.keep_outputs=true"],
        pytest.param([], marks=pytest.mark.slow),  # slow: the same stop, met writing the unit's own files
    ],
)
def test_a_full_disk_stops_at_the_first_failed_write_keeps_finished_units_and_exits_4(
    tmp_path, run_py, monkeypatch, keep
):
    import errno

    import eval.store

    log = tmp_path / "computed.log"
    args = [
        "method=[]",
        "+method.slow._target_=tests.reliability.helpers.SlowLogged",
        f"+method.slow.log={log}",
        "+method.slow.delay=0",
        "runner.warmup_frames=0",
        *[a for a in RUN if not a.startswith("method=")],
        "dataset.num_videos=4",
        f"results_root={tmp_path / 'results'}",
        *keep,
    ]
    publish, writes = eval.store._publish, []

    def full_after_the_first_unit(tmp, path):
        if any(w.name == "unit.json" for w in writes):  # the disk fills up once one unit is finished
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(path)
        publish(tmp, path)

    monkeypatch.setattr(eval.store, "_publish", full_after_the_first_unit)
    r = run_py("run_eval.py", *args, f"hydra.run.dir={tmp_path / 'full'}")
    assert r.returncode == 4, r.stderr[-3000:]
    assert (
        "disk full (No space left on device) writing " in r.stderr
        and "run the same command again" in r.stderr
    )
    assert "exit status 4" in r.stderr
    assert len(log.read_text().splitlines()) == 2  # the unit that hit the full disk, then nothing more
    status = json.loads((tmp_path / "full" / "status.json").read_text())
    assert status["status"] == "disk_full" and "No space left" in status["error"], status
    assert (tmp_path / "full" / "INCOMPLETE").exists()
    from eval.store import UnitStore

    store = UnitStore(tmp_path / "results")
    (done,) = [p.parent.name for p in (tmp_path / "results" / "units").glob("*/*/unit.json")]
    assert store.damage(done) is None  # the finished unit is whole
    monkeypatch.setattr(eval.store, "_publish", publish)  # space again: the same command resumes
    r = run_py("run_eval.py", *args, f"hydra.run.dir={tmp_path / 'again'}")
    assert r.returncode == 0, r.stderr[-3000:]
    statuses = pd.read_parquet(tmp_path / "again" / "units.parquet").status.tolist()
    assert sorted(statuses) == ["cached", "ok", "ok", "ok"], statuses
    assert len(log.read_text().splitlines()) == 5


def test_sigterm_is_handled_like_ctrl_c_in_a_real_process(tmp_path):
    """SIGTERM (SLURM's preemption and time-out signal) to a real ``run_eval.py``: the folder says interrupted
    (it said "running", with a dead pid), the finished units are in its tables, a re-run resumes from them. The
    only test of a real signal to a run (the fast suite's second real process, as the crash test's)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    args = [
        f"results_root={tmp_path / 'results'}",
        "method=[]",
        "+method.slow._target_=tests.reliability.helpers.SlowLogged",
        f"+method.slow.log={tmp_path / 'computed.log'}",
        "+method.slow.delay=0.2",
        "runner.warmup_frames=0",
        "dataset.num_videos=3",
        "dataset.num_frames=4",
        "metrics=none",
        "report.enabled=false",
    ]
    env = {k: v for k, v in os.environ.items() if k != "LIVE2DIFF_BENCH_FAULT"}
    cmd = [sys.executable, "run_eval.py", *args, f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "results" / "units").glob("*/*/unit.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "terminated by SIGTERM" in err
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM", status
    assert (tmp_path / "run" / "INCOMPLETE").exists()
    units = pd.read_parquet(tmp_path / "run" / "units.parquet")
    finished = {
        json.loads(p.read_text())["key"] for p in (tmp_path / "results" / "units").glob("*/*/unit.json")
    }
    assert len(units) >= 1 and set(units.key) <= finished and set(units.status) <= {"ok"}
    resumed = run_config(tmp_path, *args[1:], name="resumed", fresh=True)
    assert sorted(u.status for u in resumed.units) == sorted(
        ["cached"] * len(finished) + ["ok"] * (3 - len(finished))
    )


def _reference_damages():
    def truncated(ref, path):
        path.write_text(json.dumps(ref)[:300])

    def other_schema(ref, path):
        path.write_text(json.dumps({**ref, "schema": 99}))

    def setup_edited(
        ref, path
    ):  # the hash left as it was: the recorded set-up no longer says what was measured
        ref["setup"]["dataset"]["num_frames"] = 8
        path.write_text(json.dumps(ref))

    def ratio_not_a_number(ref, path):
        ref["methods"]["busy"]["ratio"] = "fast"
        path.write_text(json.dumps(ref))

    return {
        "truncated": (truncated, "not valid JSON"),
        "other_schema": (other_schema, "reference schema 99"),
        "setup_edited": (setup_edited, "do not hash to its setup_hash"),
        "ratio_not_a_number": (ratio_not_a_number, "no numeric ratio"),
    }


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "setup_edited",
        # slow: the same refusal before measuring, for the other checks of the file
        pytest.param("other_schema", marks=pytest.mark.slow),
        pytest.param("ratio_not_a_number", marks=pytest.mark.slow),
    ],
)
def test_an_unusable_gate_reference_exits_3_before_anything_is_measured(tmp_path, monkeypatch, damage):
    """A truncated or other-schema reference exited 1 (read by CI as a regression) after the minutes of
    measurement; one whose set-up fields were edited passed."""
    import torch

    from eval import cli
    from eval.gate import EXIT_NO_REFERENCE, EXIT_OK
    from eval.gate import run as gate_run
    from tests.test_gate import _cfg, timing

    measured = []

    def measure(methods, streams, **kw):
        measured.append(sorted(methods))
        return {k: timing(2.0) for k in methods}

    threads = torch.get_num_threads()
    monkeypatch.setattr(gate_run, "measure", measure)
    try:
        assert cli.main(_cfg(tmp_path, update_reference="true"), tmp_path / "r0") == EXIT_OK
        assert cli.main(_cfg(tmp_path), tmp_path / "r1") == EXIT_OK  # the intact reference is compared
        ref = json.loads((tmp_path / "ref.json").read_text())
        fn, said = _reference_damages()[damage]
        fn(ref, tmp_path / "ref.json")
        measured.clear()
        monkeypatch.setattr(
            gate_run, "_build", lambda cfg: pytest.fail("built methods for an unusable reference")
        )
        out = gate_run.run_gate(_cfg(tmp_path), tmp_path / "r2")
    finally:
        torch.set_num_threads(threads)
    assert out.code == EXIT_NO_REFERENCE and "UNUSABLE REFERENCE" in out.text and said in out.text, out.text
    assert measured == []
    assert json.loads((tmp_path / "r2" / "gate.json").read_text())["exit_code"] == EXIT_NO_REFERENCE


def test_report_never_overwrites_a_run_and_refuses_unknown_or_killed_folders(tmp_path, run_py):
    import shutil
    import subprocess

    from eval.store import claim_run_dir

    a, b = (run(tmp_path, name=n).run_dir for n in ("a", "b"))
    own = (a / "per_method.csv").read_bytes() if (a / "per_method.csv").exists() else None
    (a / "summary.md").write_text("a's own report\n")
    r = run_py("-m", "eval.report", str(a), str(b))
    assert r.returncode == 0, r.stdout[-2000:]
    assert (a / "summary.md").read_text() == "a's own report\n"  # it was overwritten with the merged report
    assert ((a / "per_method.csv").read_bytes() if own is not None else None) == own
    (merged,) = tmp_path.glob("merged_*")
    assert f"written to a new folder, {merged}" in r.stdout and (merged / "summary.md").is_file()
    assert (
        run_py("-m", "eval.report", str(b)).returncode == 0 and (b / "summary.md").is_file()
    )  # its own folder

    c = tmp_path / "c"
    shutil.copytree(b, c)
    (c / "provenance.json").unlink()  # its methods were split into rows of unknown settings
    r = run_py("-m", "eval.report", str(a), str(c), "--out", str(tmp_path / "ac"))
    assert r.returncode == 2 and f"{c} has no provenance.json" in r.stdout, r.stdout

    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = claim_run_dir(tmp_path / "killed")  # what a SIGKILLed run leaves: status running, no tables
    status = json.loads((killed / "status.json").read_text())
    (killed / "status.json").write_text(json.dumps({**status, "pid": gone.pid}))
    r = run_py("-m", "eval.report", str(killed))
    assert r.returncode == 2 and "did not finish and wrote no tables" in r.stdout, r.stdout
    assert "the run was killed" in r.stdout and "not a result folder" not in r.stdout


def test_a_report_of_an_unfinished_run_says_so_at_the_top(tmp_path, run_py):
    import shutil

    from eval.store import claim_run_dir, finish_run_dir

    a, b = (run(tmp_path, name=n).run_dir for n in ("a", "b"))
    killed = claim_run_dir(tmp_path / "killed")
    d = run(tmp_path, name="stopped").run_dir  # tables written, then marked as a SIGTERM leaves it
    (d / "INCOMPLETE").write_text("x")
    finish_run_dir(d, "interrupted", {"signal": "SIGTERM"})
    r = run_py("-m", "eval.report", str(a), str(d), "--out", str(tmp_path / "ad"))
    assert r.returncode == 0, r.stdout[-2000:]
    top = (tmp_path / "ad" / "summary.md").read_text().splitlines()[:4]
    assert any(
        "INCOMPLETE — run 'stopped' did not finish (status.json says interrupted (SIGTERM))" in x for x in top
    ), top

    sweep = (
        tmp_path / "sweep"
    )  # a multirun folder with one job killed: named at the top, not silently left out
    shutil.copytree(b, sweep / "0")
    shutil.copytree(killed, sweep / "1")
    r = run_py("-m", "eval.report", str(sweep), "--out", str(tmp_path / "sw"))
    assert r.returncode == 0, r.stdout[-2000:]
    top = (tmp_path / "sw" / "summary.md").read_text().splitlines()[:4]
    assert any("INCOMPLETE — run '1' did not finish" in x and "wrote no tables" in x for x in top), top
