"""The report's defaults where no composed config is at hand (``python -m eval.report``, :func:`build_report`
called from code, a sweep's merge): read from ``conf/config.yaml``'s ``report`` block, the one place they are set.
A run passes its own composed ``report.*`` values instead."""

from __future__ import annotations

from omegaconf import OmegaConf

from eval.paths import CONF_DIR

_REPORT = OmegaConf.load(CONF_DIR / "config.yaml").report

#: ``report.compare_to``: the method of the paired comparison
COMPARE_TO: str | None = _REPORT.compare_to
#: ``report.reference_methods``: rows shown but never ranked (the input, the offline reference)
REFERENCE_METHODS: tuple[str, ...] = tuple(_REPORT.reference_methods)
