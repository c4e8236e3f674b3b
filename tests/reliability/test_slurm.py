"""Scale-out on a real SLURM cluster: ``-m hydra/launcher=submitit_slurm`` as a user runs it. The test starts a
single-node cluster on this machine itself (``.ci/slurm-up``: Debian's slurm-wlm and munge, run as root) and skips,
saying why, where it cannot. A sweep of dataset shards merges into the tables one local process writes; a job
requeued mid-run (``scontrol requeue``: what preemption does) starts again and resumes in its own folder: the
finished units are reused, the interrupted one computed again, its lock (held by the killed process) does not block
it, and the sweep waits for the requeued attempt instead of taking the killed one for finished.

Slow (cluster start-up, sbatch, a requeue that waits out SLURM's credential expiry): the only test of the SLURM
path; tests/reliability/test_scaleout.py covers shards, merging and the other launchers fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from eval import results
from eval.cli import run_from_config
from tests.conftest import ROOT, compose
from tests.reliability.helpers import SlowLogged
from tests.reliability.test_scaleout import quality

pytestmark = pytest.mark.slow

PARTITION = "debug"
UP = ROOT / ".ci" / "slurm-up"


@pytest.fixture(scope="module")
def cluster() -> str:
    """The partition of a running single-node cluster (started here when none answers)."""
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("SLURM is not installed: apt-get install -y slurm-wlm munge (or .ci/slurm-up --install)")
    if os.geteuid() != 0:
        pytest.skip("starting the test cluster needs root (munged, slurmctld, slurmd)")
    p = subprocess.run(
        ["bash", str(UP)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SLURM_UP_PARTITION": PARTITION},
    )
    if p.returncode == 3:
        pytest.skip(p.stderr.strip())
    assert p.returncode == 0, p.stdout + p.stderr
    return PARTITION


def _sweep_cmd(tmp_path: Path, partition: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "run_eval.py",
        "-m",
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.cpus_per_task=1",
        f"results_root={tmp_path / 'results'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "report.print=false",
        *args,
    ]


def _env() -> dict:
    # the jobs inherit this environment (sbatch --export=ALL): the checkout's code on the path wherever they start
    env = {k: v for k, v in os.environ.items() if k != "LIVE2DIFF_BENCH_FAULT"}
    return {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def _local(tmp_path: Path, *args: str):
    """The same evaluation in this process, on a results root of its own: what the sweep must reproduce."""
    cfg = compose([f"results_root={tmp_path / 'local_results'}", *args])
    return run_from_config(cfg, run_dir=tmp_path / "local", progress=False)


def _jobs(sweep: Path) -> list[Path]:
    return results.expand_run_dirs([sweep])


SHARDED = ["method=[identity]", "+method.inv._target_=tests.fake_methods.DelayMethod", "dataset.num_videos=3"]
SHARDED += ["dataset.num_frames=6"]


def test_a_shard_sweep_on_slurm_merges_into_the_tables_of_one_process(cluster, tmp_path):
    cmd = _sweep_cmd(tmp_path, cluster, *SHARDED, "dataset.num_shards=2", "dataset.shard=0,1")
    p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    sweep = tmp_path / "sweep"
    jobs = _jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    scripts = list((sweep / ".submitit").glob("*/*_submission.sh"))  # what submitit handed to sbatch
    assert scripts and all("#SBATCH --partition=" + cluster in s.read_text() for s in scripts)
    assert len(_slurm_job_ids(sweep)) == 2
    shards = [set(pd.read_parquet(j / "units.parquet").video) for j in jobs]
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 3
    merged = results.load_runs(jobs)
    one = _local(tmp_path, *SHARDED)
    pd.testing.assert_frame_equal(quality(merged.videos), quality(one.videos))
    assert "3 videos" in (sweep / "report" / "summary.md").read_text()  # the sweep's merged report


def _slurm_job_ids(sweep: Path) -> list[str]:
    """The sweep's SLURM jobs (array tasks), as submitit's folders name them."""
    folder = sweep / ".submitit"
    if not folder.is_dir():
        return []
    # <job id>/ (one job) or <array id>_<task>/ (a job array, whose sbatch script is in <array id>/): the job's
    # pickled call and logs
    return sorted(
        p.name for p in folder.iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name) and any(p.glob("*.pkl"))
    )


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before {what}: {err[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class AttemptLogged(SlowLogged):
    """:class:`SlowLogged` whose lines say which attempt of the SLURM job computed the unit (``SLURM_RESTART_COUNT``:
    unset at first, 1 after one requeue)."""

    def prepare(self, prompt, *, height, width, seed):
        if prompt != "warm-up":
            with open(self.log, "a") as f:
                f.write(f"{os.environ.get('SLURM_RESTART_COUNT', '0')}\t{prompt}\n")


def test_a_requeued_job_resumes_reusing_finished_units(cluster, tmp_path):
    log = tmp_path / "computed.log"  # "<attempt>\t<prompt>" per unit computation, from any process
    slow = [
        "method=[]",
        "+method.slow._target_=tests.reliability.test_slurm.AttemptLogged",
        f"+method.slow.log={log}",
        "+method.slow.delay=0.4",  # 16 frames: ~6.5 s a unit, longer than the 5 s SLURM waits from SIGTERM to SIGKILL
        "dataset.num_videos=4",
        "dataset.num_frames=16",
        "metrics=none",
        "+metrics.frame_diff._target_=eval.metrics.frame_diff.MeanAbsFrameDiff",
    ]
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        _sweep_cmd(tmp_path, cluster, *slow),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def lines() -> list[tuple[str, str]]:
        return [tuple(ln.split("\t", 1)) for ln in log.read_text().splitlines()] if log.is_file() else []

    try:
        (job,) = _wait(lambda: _slurm_job_ids(sweep), 120, "the job's submission", proc)
        _wait(lambda: len(lines()) >= 2, 300, "the second unit to start", proc)  # the first one is stored
        subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, timeout=30)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", *_slurm_job_ids(sweep)], capture_output=True)
    assert proc.returncode == 0, err[-4000:]
    prompts = list(compose(slow).dataset.prompt_list)
    prompts = [
        prompts[i % len(prompts)] for i in range(4)
    ]  # the synthetic clips cycle through the prompt list
    first = [p for a, p in lines() if a == "0"]
    again = [p for a, p in lines() if a == "1"]
    assert {a for a, _ in lines()} == {"0", "1"}, lines()  # two attempts of the one job, nothing else
    k = len(first)  # the first attempt finished k - 1 units and was killed in unit k
    assert 2 <= k <= 3 and first == prompts[:k], lines()
    # the requeued attempt computed the interrupted unit again and the rest, never a unit the first one finished
    assert again == prompts[k - 1 :], lines()
    jobs = _jobs(sweep)
    # the killed attempt wrote its finished units' tables at SIGTERM and ended without reporting a result (the
    # sweep kept waiting); the requeued attempt took the job's folder back and rewrote it whole
    assert jobs == [sweep / "0"] and not (sweep / "0_2").exists()
    logs = "".join(f.read_text() for f in (sweep / ".submitit" / job).glob("*_log.*"))
    assert "terminated by SIGTERM" in logs, logs[-3000:]
    record = json.loads((sweep / "0" / "status.json").read_text())
    assert record["status"] == "complete" and record["slurm_job"] == job and record["slurm_restart"] == 1, (
        record
    )
    final = jobs[0]
    status = pd.read_parquet(final / "units.parquet").sort_values("video").status.tolist()
    assert status == ["cached"] * (k - 1) + ["ok"] * (4 - k + 1), status
    local = [a for a in slow if not a.startswith("+method.slow.log")] + [
        f"+method.slow.log={tmp_path / 'l.log'}"
    ]
    one = _local(tmp_path, *local)
    pd.testing.assert_frame_equal(quality(results.load_runs(jobs).videos), quality(one.videos))
