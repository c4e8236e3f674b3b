"""Entry point: ``python run_eval.py [group=option ...] [key=value ...]`` (Hydra; ``-m`` for sweeps).

Composes ``conf/config.yaml``, runs every selected method on the dataset, writes results and the report to
``results/<experiment_name>/<timestamp>/`` and prints the summary table. Exit status: 0 when every unit succeeded,
1 when some failed (their reasons are in the report), 2 for a bad command line.

With ``gate.enabled`` (``experiment=ci_latency``) it runs the latency gate instead (eval/gate.py): exit 1 on a
regression, 3 when there is no comparable reference; ``--update-reference`` rewrites the reference.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from eval.cli import check_overrides, exit_code, run_from_config  # noqa: E402

_summaries = []
_gate_codes: list[int] = []
log = logging.getLogger("run_eval")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    if cfg.get("gate") and cfg.gate.get("enabled"):
        from hydra.core.hydra_config import HydraConfig

        from eval.gate import run_gate

        outcome = run_gate(cfg, HydraConfig.get().runtime.output_dir)
        print(outcome.text)
        _gate_codes.append(outcome.code)
        return
    summary = run_from_config(cfg)
    _summaries.append(summary)
    if cfg.report.get("print", True) and (summary.run_dir / "summary.md").is_file():
        print((summary.run_dir / "summary.md").read_text())
    print(f"results: {summary.run_dir}")


if __name__ == "__main__":
    if "--update-reference" in sys.argv:  # a flag for humans; Hydra itself only takes key=value overrides
        sys.argv = [a for a in sys.argv if a != "--update-reference"] + ["gate.update_reference=true"]
    problem = check_overrides(sys.argv[1:])
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    main()
    sys.exit(max([exit_code(_summaries), *_gate_codes]))
