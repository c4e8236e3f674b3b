"""Entry point: ``python run_eval.py [group=option ...] [key=value ...]`` (Hydra; ``-m`` for sweeps).

Composes ``conf/config.yaml`` and hands it to :func:`eval.cli.main`: every selected method on the dataset, results
and the report in ``results/<experiment_name>/<timestamp>/``, the summary table printed. Exit status: 0 when every
unit succeeded, 1 when some failed (their reasons are in the report), 2 for a configuration or set-up error (a bad
command line or setting, a missing file: nothing was computed), 4 when the disk filled up (stopped at the first
failed write, finished units kept; re-run to resume). With ``gate.enabled``
(``experiment=ci_latency``) the latency gate instead: 1 on a regression, 3 without a comparable reference;
``--update-reference`` rewrites the reference. With ``+check=true`` only the pre-flight check (eval/check.py): exit 2
when a weight file, video or prompt is missing (nothing is built), else 0 with a run-time estimate per method.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from eval import cli  # noqa: E402

_codes: list[int] = []
_started: list[bool] = []  # the task function ran: a SystemExit before it is Hydra refusing the config


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    _started.append(True)
    _codes.append(cli.main(cfg))


if __name__ == "__main__":
    sys.argv, problem = cli.command_line(sys.argv)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except SystemExit as exc:
        if exc.code == 1 and not _started:  # Hydra could not compose the config (it printed why)
            sys.exit(2)
        raise
    sys.exit(max(_codes, default=0))
