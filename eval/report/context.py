"""What every section needs: :class:`Context` (the merged results, the report options and what is derived from
them once), the per-method statistics, the "best" rule, and the metric tables built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eval.report.blocks import (
    NONFINITE_MARK,
    RANGE_MARK,
    Cell,
    Table,
    Text,
    fmt,
)
from eval.report.defaults import COMPARE_TO, REFERENCE_METHODS
from eval.report.stats import t_interval
from eval.results import MetricDescriptor, RunResults


# -- what every section needs -------------------------------------------------------------------------------------
@dataclass
class Context:
    """The merged results plus the report options, and what the sections derive from them once."""

    run: RunResults
    out: Path
    compare_to: str | None = COMPARE_TO
    reference_methods: frozenset[str] = frozenset(REFERENCE_METHODS)
    seed: int = 0

    def __post_init__(self) -> None:
        v = self.run.videos
        self.methods = self.run.methods
        present = list(dict.fromkeys(v["metric"])) if not v.empty else []
        self.desc = {**self.run.metrics}
        self.desc.update({m: MetricDescriptor(m, m, kind="other") for m in present if m not in self.desc})
        self.metrics = metric_order(self.desc, present)
        self.wide = (
            v.pivot_table(
                index=["method", "video"], columns="metric", values="value", aggfunc="first", dropna=False
            )
            if not v.empty
            else pd.DataFrame()
        )
        units = self.run.units
        self.expected = {
            m: list(dict.fromkeys(units.loc[units["method"] == m, "video"])) for m in self.methods
        }
        self.failed = set(units.loc[units["status"] == "error", "method"]) if not units.empty else set()
        self.nonfinite = self._per_video_count("nonfinite_frames")
        self.out_of_range = self._per_video_count("out_of_range_frames")
        self.table = per_method_stats(self)

    def _per_video_count(self, metric: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        if metric not in self.wide.columns:
            return out
        for (m, vid), x in self.wide[metric].items():
            if np.isfinite(x) and x > 0:
                out.setdefault(m, {})[vid] = int(x)
        return out

    def label(self, method: str) -> str:
        marks = (NONFINITE_MARK if method in self.nonfinite else "") + (
            RANGE_MARK if method in self.out_of_range else ""
        )
        return method + (f" {marks}" if marks else "")

    def ranked(self, method: str) -> bool:
        return method not in self.reference_methods and method not in self.nonfinite

    def values(self, method: str, metric: str) -> pd.Series:
        """Per-video values of ``method`` (indexed by video, NaN where missing) over the videos it was run on."""
        if metric not in self.wide.columns or method not in self.wide.index.get_level_values(0):
            return pd.Series(np.nan, index=pd.Index(self.expected.get(method, []), name="video"))
        s = self.wide.loc[method, metric]
        return s.reindex(list(dict.fromkeys([*self.expected.get(method, []), *s.index])))


def metric_order(desc: dict[str, MetricDescriptor], present: list[str]) -> list[str]:
    kinds = ("quality", "system")
    first = [m for k in kinds for m in present if desc[m].kind == k]
    return first + [m for m in present if m not in first]


def per_method_stats(ctx: Context) -> pd.DataFrame:
    """One row per (method, metric): mean and t interval over videos, n, videos missing, non-finite frames."""
    rows = []
    for method in ctx.methods:
        for metric in ctx.metrics:
            vals = ctx.values(method, metric)
            if metric not in ctx.wide.columns:
                continue
            if vals.isna().all() and metric not in method_metrics(ctx, method) and method not in ctx.failed:
                continue  # a metric this method does not produce (live figures, skipped_ratio ...)
            iv = t_interval(vals.to_numpy())
            rows.append(
                {
                    "method": method,
                    "metric": metric,
                    "mean": iv.mean,
                    "ci_low": iv.low,
                    "ci_high": iv.high,
                    "n_videos": iv.n,
                    "missing_videos": int(len(vals) - iv.n),
                    "nonfinite_frames": sum(ctx.nonfinite.get(method, {}).values()),
                }
            )
    cols = ["method", "metric", "mean", "ci_low", "ci_high", "n_videos", "missing_videos", "nonfinite_frames"]
    return pd.DataFrame(rows, columns=cols)


def method_metrics(ctx: Context, method: str) -> set[str]:
    v = ctx.run.videos
    return set(v.loc[v["method"] == method, "metric"])


def best_methods(ctx: Context, metric: str, methods: list[str]) -> set[str]:
    """The best candidate(s) for ``metric``, compared on the videos where every candidate has a finite value."""
    d = ctx.desc[metric]
    if d.higher_is_better is None or d.kind not in ("quality", "system") or d.input_side:
        return set()
    cands = [m for m in methods if ctx.ranked(m) and metric in method_metrics(ctx, m)]
    if len(cands) < 2:
        return set()
    frame = pd.DataFrame({m: ctx.values(m, metric) for m in cands})
    common = frame.dropna()
    if common.empty:
        return set()
    means = common.mean()
    if means.nunique() == 1:
        return set()
    target = means.max() if d.higher_is_better else means.min()
    return set(means.index[means == target])


def interval_cell(ctx: Context, method: str, metric: str, bold: bool = False) -> Cell:
    t = ctx.table
    row = t[(t["method"] == method) & (t["metric"] == metric)]
    if row.empty:
        return Cell("")
    r = row.iloc[0]
    text = fmt(r["mean"])
    if math.isfinite(r["ci_low"]):
        text += f" [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
    text += f" n={int(r['n_videos'])}"
    title = f"mean over {int(r['n_videos'])} videos, Student-t 95 % interval"
    if r["missing_videos"]:
        text += f" ({int(r['missing_videos'])} missing)"
        title += f"; {int(r['missing_videos'])} videos have no value (failed unit or every frame non-finite)"
    bad = ctx.nonfinite.get(method, {})
    if bad and ctx.desc[metric].kind == "quality":
        text += f" {NONFINITE_MARK}{sum(bad.values())} frames"
        title += f"; {sum(bad.values())} non-finite output frames left out"
    return Cell(text, bold=bold, title=title)


def metric_table(
    ctx: Context, methods: list[str], metrics: list[str], headers: list[str] | None = None
) -> Table:
    bests = {metric: best_methods(ctx, metric, methods) for metric in metrics}
    rows = [
        [Cell(ctx.label(m))] + [interval_cell(ctx, m, metric, m in bests[metric]) for metric in metrics]
        for m in methods
    ]
    return Table(["method"] + (headers or [ctx.desc[m].header for m in metrics]), rows)


def legend(ctx: Context) -> Text:
    refs = [m for m in ctx.methods if m in ctx.reference_methods]
    parts = [
        "Mean [95 % Student-t interval] over videos, n = videos with a value; ↑/↓ = higher/lower is better",
        "**bold** = best among candidate methods, compared on the videos they all have"
        + (f" (reference rows, not ranked: {', '.join(refs)})" if refs else ""),
    ]
    if ctx.nonfinite:
        parts.append(f"{NONFINITE_MARK} = non-finite output frames (left out of the means; never ranked)")
    if ctx.out_of_range:
        parts.append(f"{RANGE_MARK} = output frames outside [0, 1] (clamped for scoring)")
    return Text("; ".join(parts) + ".")
