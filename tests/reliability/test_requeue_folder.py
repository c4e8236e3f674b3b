"""A requeued SLURM job (same ``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT`` one higher) continues in the run folder its
earlier attempt claimed; anything else given a taken folder still gets a new one. The real cluster's version is
tests/reliability/test_slurm.py (slow)."""

from __future__ import annotations

import json

import pytest

from eval.store import claim_run_dir, finish_run_dir


@pytest.fixture
def slurm(monkeypatch):
    def attempt(job: str | None, restart: int | None = None) -> None:
        for var, value in (("SLURM_JOB_ID", job), ("SLURM_RESTART_COUNT", restart)):
            if value is None:
                monkeypatch.delenv(var, raising=False)
            else:
                monkeypatch.setenv(var, str(value))

    return attempt


def test_a_requeued_job_takes_its_folder_back(tmp_path, slurm):
    slurm("41")
    first = claim_run_dir(tmp_path / "0")
    assert json.loads((first / "status.json").read_text())["slurm_restart"] == 0
    finish_run_dir(first, "interrupted", {"signal": "SIGTERM"})
    slurm("41", 1)
    again = claim_run_dir(tmp_path / "0")
    assert again == first and (again / "INCOMPLETE").is_file()
    record = json.loads((again / "status.json").read_text())
    assert record["status"] == "running" and record["slurm_restart"] == 1 and "signal" not in record
    slurm("41", 2)  # killed again without a word (SIGKILL: still "running"), requeued again
    assert claim_run_dir(tmp_path / "0") == first


@pytest.mark.parametrize(
    "first, then, status",
    [
        (("41", None), ("41", 1), "complete"),  # a finished job's folder is never reopened
        (("41", None), ("42", 1), "interrupted"),  # another job
        (("41", 1), ("41", 1), "interrupted"),  # the same attempt twice (two runs in one job step)
        (("41", None), (None, None), "interrupted"),  # not a SLURM job
        ((None, None), ("41", 1), "interrupted"),  # a folder of a run outside SLURM
    ],
)
def test_other_runs_get_a_folder_of_their_own(tmp_path, slurm, first, then, status):
    slurm(*first)
    d = claim_run_dir(tmp_path / "0")
    finish_run_dir(d, status)
    slurm(*then)
    assert claim_run_dir(tmp_path / "0") == tmp_path / "0_2"
