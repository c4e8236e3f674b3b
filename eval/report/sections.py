"""The report's sections, each built once as data (tables of cells, images, text) from stored results only;
``render.py`` turns the same sections into markdown and HTML. To change what a table shows, change its builder here.

Statistics (``stats.py``): means over videos with Student-t 95 % intervals, n in every cell; paired differences on
the videos where both methods have a finite value, exact sign-flip p-values, Holm's correction across the table.
"Best" is bolded among candidate methods only (not ``report.reference_methods``, not a method with non-finite
outputs), compared on the videos every candidate has.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from eval.report import plots
from eval.report.blocks import (
    SIGNIFICANT_MARK,
    Cell,
    Image,
    Section,
    Text,
    fmt,
    table,
)
from eval.report.context import (
    Context,
    legend,
    method_metrics,
    metric_table,
)
from eval.report.published import published_section
from eval.report.stats import holm, sign_flip_pvalue, t_interval
from eval.results import LIVE_COLUMNS

# the paper's axes, in its order: (axis, metrics that can stand for it, first present wins)
HEADLINE = (
    ("Prompt alignment", ("clip_score",)),
    ("Consistency", ("clip_consistency",)),
    ("Warp error", ("warp_error",)),
    ("Structure", ("depth_error", "lpips")),
    ("FPS", ("fps",)),
    ("Latency p95", ("latency_p95_ms",)),
)


# -- sections -----------------------------------------------------------------------------------------------------
def header_section(ctx: Context) -> Section:
    units = ctx.run.units
    n_videos = units["video"].nunique() if not units.empty else 0
    blocks: list = [
        # first: a table from a run that did not finish lacks the units it did not reach
        Text(
            f"INCOMPLETE — run '{name}' did not finish ({why}): these tables lack the units it did not reach; run the "
            "same command again to resume it, then rebuild this report",
            note=True,
        )
        for name, why in ctx.run.incomplete.items()
    ]
    blocks.append(Text(f"Runs: {', '.join(ctx.run.runs)} — {n_videos} videos, {len(ctx.methods)} methods."))
    for note in ctx.run.all_notes():
        blocks.append(Text(note, note=True))
    for m, bad in ctx.nonfinite.items():
        blocks.append(
            Text(
                f"{m}: {sum(bad.values())} output frames are NaN/inf (videos: {', '.join(sorted(bad))}); "
                "they count as failed frames, the method is not ranked",
                note=True,
            )
        )
    for m, bad in ctx.out_of_range.items():
        blocks.append(
            Text(
                f"{m}: {sum(bad.values())} output frames have values outside [0, 1] (videos: "
                f"{', '.join(sorted(bad))}); they were clamped before scoring",
                note=True,
            )
        )
    return Section("live2diff-bench results", blocks, level=1)


def headline_section(ctx: Context) -> Section | None:
    cols = []
    for axis, names in HEADLINE:
        m = next((n for n in names if n in ctx.metrics), None)
        if m:
            cols.append((axis, m))
    if not cols or ctx.table.empty:
        return None
    t = metric_table(ctx, ctx.methods, [m for _, m in cols], [f"{a}: {ctx.desc[m].header}" for a, m in cols])
    return Section("Headline (the paper's axes)", [legend(ctx), t])


def settings_section(ctx: Context) -> Section:
    """What produced the numbers: the run's model, weights, dtype, device; each metric's settings."""
    blocks: list = []
    seen = []
    for name, s in ctx.run.settings.items():
        if not s or s in seen:
            continue
        seen.append(s)
        weights = s.get("weights") or {}
        w = (
            ", ".join(f"{k}={v.get('sha256') or 'missing'}" for k, v in weights.items())
            or "none (random init)"
        )
        blocks.append(
            Text(
                f"Run {name}: model={s.get('model')}, dtype={s.get('dtype')}, device={s.get('device')}, "
                f"seed={s.get('seed')}, mode={s.get('mode')}; weights (sha256): {w}"
            )
        )
    rows = []
    for m in ctx.metrics:
        d = ctx.desc[m]
        if d.kind != "quality":
            continue
        cfg = ", ".join(f"{k}={v}" for k, v in sorted(d.config.items())) or "–"
        rows.append([m, cfg, "yes" if d.comparable else "no"])
    if rows:
        blocks.append(table(["metric", "settings", "comparable with published"], rows))
    if ctx.run.labels:
        rows = [[label, ", ".join(f"{k}={v}" for k, v in s.items())] for label, s in ctx.run.labels.items()]
        blocks.append(Text("Method variants merged from runs with different settings, kept apart:"))
        blocks.append(table(["row", "differs in"], rows))
    return Section("What produced these numbers", blocks)


def per_method_section(ctx: Context) -> Section | None:
    if ctx.table.empty:
        return None
    shown = [m for m in ctx.metrics if ctx.desc[m].kind != "check" and m not in LIVE_COLUMNS]
    return Section("All metrics", [metric_table(ctx, ctx.methods, shown)])


def paired_rows(ctx: Context) -> pd.DataFrame:
    """Every method against ``compare_to`` on the videos where both have a finite value, with sign-flip p-values
    Holm-corrected across the whole table. Left out: metrics that cannot differ (input-side), checks, metrics
    without a direction, and system figures against a reference row (identity's speed is the harness floor)."""
    ref = ctx.compare_to
    cols = ["metric", "method", "n_videos", "diff", "ci_low", "ci_high", "p", "p_holm"]
    if not ref or ref not in ctx.methods:
        return pd.DataFrame(columns=cols)
    rows = []
    for metric in ctx.metrics:
        d = ctx.desc[metric]
        if d.input_side or d.kind not in ("quality", "system") or d.higher_is_better is None:
            continue
        if d.kind == "system" and ref in ctx.reference_methods:
            continue
        if metric in LIVE_COLUMNS:
            continue
        base = ctx.values(ref, metric)
        for method in ctx.methods:
            if method == ref or metric not in method_metrics(ctx, method):
                continue
            both = pd.DataFrame({"a": ctx.values(method, metric), "b": base}).dropna()
            diff = (both["a"] - both["b"]).to_numpy()
            iv = t_interval(diff)
            rows.append(
                {
                    "metric": metric,
                    "method": method,
                    "n_videos": iv.n,
                    "diff": iv.mean,
                    "ci_low": iv.low,
                    "ci_high": iv.high,
                    "p": sign_flip_pvalue(diff, seed=ctx.seed),
                }
            )
    df = pd.DataFrame(rows, columns=cols[:-1])
    df["p_holm"] = holm(df["p"].to_numpy()) if len(df) else []
    return df


def paired_section(ctx: Context, paired: pd.DataFrame) -> Section | None:
    if paired.empty:
        return None
    rows = []
    for metric in ctx.metrics:
        g = paired[paired["metric"] == metric]
        if g.empty:
            continue
        sign = -1.0 if ctx.desc[metric].higher_is_better else 1.0
        g = g.assign(_k=sign * g["diff"].fillna(np.inf * sign)).sort_values("_k", kind="stable")
        for i, r in enumerate(g.itertuples()):
            ci = f" [{fmt(r.ci_low)}, {fmt(r.ci_high)}]" if math.isfinite(r.ci_low) else ""
            mark = SIGNIFICANT_MARK if math.isfinite(r.p_holm) and r.p_holm < 0.05 else ""
            rows.append(
                [
                    ctx.desc[metric].header if i == 0 else "",
                    ctx.label(r.method),
                    f"{fmt(r.diff)}{ci} n={r.n_videos}",
                    fmt(r.p),
                    Cell(fmt(r.p_holm), bold=bool(mark), mark=mark),
                ]
            )
    left_out = [m for m in ctx.metrics if ctx.desc[m].input_side]
    text = (
        f"Difference (method − {ctx.compare_to}) on the videos where both have a value, mean [95 % t interval]; "
        "p: exact sign-flip permutation test (Monte Carlo above 12 videos); Holm: corrected across every row of "
        f"this table, {SIGNIFICANT_MARK} = below 0.05. Rows sorted best first within each metric."
    )
    if left_out:
        text += f" Left out (cannot differ): {', '.join(left_out)}."
    if ctx.compare_to in ctx.reference_methods:
        text += f" System figures are not compared with the reference row {ctx.compare_to}."
    cols = ["metric", "method", "difference [95 % CI]", "p (sign-flip)", "p (Holm)"]
    return Section(f"Paired comparison against {ctx.compare_to}", [Text(text), table(cols, rows)])


def per_video_section(ctx: Context) -> Section | None:
    if ctx.wide.empty:
        return None
    quality = [m for m in ctx.metrics if ctx.desc[m].kind == "quality"]
    shown = quality + [m for m in ("latency_p50_ms", "fps") if m in ctx.metrics]
    rows = [
        [f"{ctx.label(m)} / {v}"]
        + [fmt(ctx.wide.loc[(m, v), k]) if k in ctx.wide.columns else "–" for k in shown]
        for m, v in ctx.wide.index
    ]
    return Section("Per video", [table(["method / video"] + [ctx.desc[k].header for k in shown], rows)])


def live_section(ctx: Context) -> Section | None:
    """Live mode (runner.mode=live): achieved rate, drops, lag, and quality on what a viewer sees."""
    live = [m for m in ctx.methods if "drop_ratio" in method_metrics(ctx, m)]
    if not live:
        return None
    present = set().union(*(method_metrics(ctx, m) for m in live))
    shown = [m for m in LIVE_COLUMNS if m in present] + [
        m for m in ctx.metrics if ctx.desc[m].kind == "quality" and m in present
    ]
    intro = Text(
        "Live mode: each video replayed at its frame rate; quality is scored on the frames a viewer sees "
        "(a dropped frame's slot shows the last output). Lag = arrival of a frame → emission of its output."
    )
    blocks: list = [intro, metric_table(ctx, live, shown)]
    if plots.lag_over_time(ctx.run.frames, ctx.run.videos, ctx.out / "lag_over_time.png"):
        blocks.append(Image(ctx.out / "lag_over_time.png", "Live lag over the stream"))
    return Section("Live", blocks)


def plot_sections(ctx: Context) -> list[Section]:
    out = []
    quality = [m for m in ctx.metrics if ctx.desc[m].kind == "quality"]
    if plots.quality_vs_speed(ctx.table, ctx.desc, quality, ctx.out / "quality_vs_speed.png"):
        out.append(Section("Quality vs speed", [Image(ctx.out / "quality_vs_speed.png", "Quality vs speed")]))
    if plots.over_time(ctx.run.frames, "latency_ms", ctx.desc, ctx.out / "latency_over_time.png"):
        title = "End-to-end latency over the stream"
        out.append(Section(title, [Image(ctx.out / "latency_over_time.png", title)]))
    return out


def strips_section(ctx: Context) -> Section | None:
    if not ctx.run.strips:
        return None
    blocks: list = []
    for p in ctx.run.strips:
        blocks.append(Section(f"{p.parent.name} / {p.stem}", [Image(p, p.stem)], level=3))
    return Section("Frame strips (input above, output below)", blocks)


def failures_section(ctx: Context) -> Section | None:
    units = ctx.run.units
    failed = units[units["status"] == "error"] if not units.empty else units
    if failed.empty:
        return None
    rows = [[r.method, r.video, r.error] for r in failed.itertuples()]
    return Section(f"Failed units ({len(failed)})", [table(["method", "video", "reason"], rows)])


def build_sections(ctx: Context) -> tuple[list[Section], pd.DataFrame]:
    """Every section in reading order (None = nothing to show), and the paired table (for paired.csv)."""
    paired = paired_rows(ctx)
    sections = [
        header_section(ctx),
        headline_section(ctx),
        settings_section(ctx),
        published_section(ctx),
        per_method_section(ctx),
        paired_section(ctx, paired),
        live_section(ctx),
        *plot_sections(ctx),
        per_video_section(ctx),
        strips_section(ctx),
        failures_section(ctx),
    ]
    return [s for s in sections if s is not None], paired
