"""Hydra multirun support: a callback that writes one merged report when a sweep ends.

Sweeps run on Hydra's own launchers (basic, joblib, submitit_local, submitit_slurm); every job writes its run
folder under ``<sweep dir>/<job number>/``. When the sweep ends, :class:`MergeReport` (enabled in
``conf/config.yaml`` under ``hydra.callbacks``) merges those folders into ``<sweep dir>/report/`` — the same as
``python -m eval.report <sweep dir> --out <sweep dir>/report``. A sweep whose jobs cannot be merged (say, two seeds
of one method: the report refuses to mix settings) gets a warning, not a failed sweep.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from eval.report.defaults import COMPARE_TO

log = logging.getLogger(__name__)

REPORT_DIR = "report"


class MergeReport(Callback):
    def __init__(
        self,
        enabled: bool = True,
        compare_to: str | None = COMPARE_TO,
        reference_methods: list[str] | None = None,
    ) -> None:
        self.enabled, self.compare_to = enabled, compare_to
        self.reference_methods = list(reference_methods) if reference_methods is not None else None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        merge_sweep(
            sweep_dir,
            compare_to=self.compare_to,
            seed=int(config.get("seed", 0)),
            reference_methods=self.reference_methods,
        )


def merge_sweep(
    sweep_dir: Path,
    *,
    compare_to: str | None = COMPARE_TO,
    seed: int = 0,
    reference_methods: list[str] | None = None,
) -> Path | None:
    """Merge the run folders of a sweep into ``sweep_dir/report``; None (with a warning) when there is nothing to
    merge or the runs cannot be merged."""
    from eval import results
    from eval.report import build_report

    out = sweep_dir / REPORT_DIR
    extra = {"reference_methods": reference_methods} if reference_methods is not None else {}
    try:
        dirs = results.expand_run_dirs([sweep_dir])
        build_report(dirs, out, compare_to=compare_to, seed=seed, **extra)
    except Exception as exc:  # noqa: BLE001 - the jobs' own results stand; only the merged view is missing
        log.warning("sweep %s: no merged report (%s: %s)", sweep_dir, type(exc).__name__, exc)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        return None
    log.info("sweep %s: merged report of %d runs in %s", sweep_dir, len(dirs), out)
    print(f"merged report: {out}")
    return out
