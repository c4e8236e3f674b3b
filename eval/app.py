"""The Hydra application: what the ``live2diff-bench`` command (an installed package) and ``run_eval.py`` (a
checkout) run. ``live2diff-bench [group=option ...] [key=value ...]`` (``-m`` for sweeps) composes the suite's
``config.yaml`` — found in the checkout's ``conf/`` or inside the installed package (:mod:`eval.paths`); a user's
own config folders join through ``hydra.searchpath=[file://DIR]`` — and hands it to :func:`eval.cli.main`.

Exit status: 0 when every unit succeeded, 1 when some failed (their reasons are in the report), 2 for a
configuration or set-up error (a bad command line or setting, a missing file: nothing was computed), 4 when the
disk filled up (stopped at the first failed write, finished units kept; re-run to resume), 130 / 143 when stopped
by Ctrl-C / SIGTERM (the folder marked interrupted, the finished units in its tables). With ``gate.enabled``
(``experiment=ci_latency``) the latency gate instead: 1 on a regression, 3 without a comparable reference;
``--update-reference`` rewrites the reference. With ``+check=true`` only the pre-flight check (eval/check.py): exit
2 when a weight file, video or prompt is missing (nothing is built), else 0 with a run-time estimate per method.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded (before transformers is imported)
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from eval import cli  # noqa: E402
from eval.paths import CONF_DIR  # noqa: E402

_codes: list[int] = []
_started: list[bool] = []  # the task function ran: a SystemExit before it is Hydra refusing the config


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _app(cfg: DictConfig) -> None:
    _started.append(True)
    try:
        _codes.append(cli.main(cfg))
    # Ctrl-C or SIGTERM (eval/cli.py): the folder is marked interrupted, the tables hold the finished units
    except KeyboardInterrupt as exc:
        what = str(exc) or "interrupted by SIGINT"
        print(
            f"{what}: the run folder is marked interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        code = getattr(exc, "exit_code", 128 + 2)  # as a shell reports SIGTERM (143) / SIGINT (130)
        if os.environ.get("SUBMITIT_EXECUTOR"):
            # a submitit job (hydra/launcher=submitit_slurm): returning would record the job as finished, and the
            # sweep waiting for it would merge an interrupted job while SLURM requeues (preemption, scontrol
            # requeue) or cancels it. The tables are written: end as SLURM's SIGKILL would, just sooner.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _codes.append(code)


def run() -> None:
    """The command line in ``sys.argv`` (checked first: a misspelled config name exits 2 with a suggestion), then
    Hydra's app; exits with the status above."""
    _codes.clear()
    _started.clear()
    sys.argv, problem = cli.command_line(sys.argv)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    try:
        _app()
    except SystemExit as exc:
        if exc.code == 1 and not _started:  # Hydra could not compose the config (it printed why)
            sys.exit(2)
        raise
    sys.exit(max(_codes, default=0))


if __name__ == "__main__":
    run()
