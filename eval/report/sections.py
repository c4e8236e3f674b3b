"""The report's sections, each built once as data (tables of cells, images, text) from stored results only;
``render.py`` turns the same sections into markdown and HTML. To change what a table shows, change its builder here.

Statistics (``stats.py``): means over videos with Student-t 95 % intervals, n in every cell; paired differences on
the videos where both methods have a finite value, exact sign-flip p-values, Holm's correction across the table.
"Best" is bolded among candidate methods only (not ``report.reference_methods``, not a method with non-finite
outputs), compared on the videos every candidate has.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eval.report import plots
from eval.report.defaults import COMPARE_TO, REFERENCE_METHODS
from eval.report.stats import holm, sign_flip_pvalue, t_interval
from eval.results import LIVE_COLUMNS, MetricDescriptor, RunResults

# the paper's axes, in its order: (axis, metrics that can stand for it, first present wins)
HEADLINE = (
    ("Prompt alignment", ("clip_score",)),
    ("Consistency", ("clip_consistency",)),
    ("Warp error", ("warp_error",)),
    ("Structure", ("depth_error", "lpips")),
    ("FPS", ("fps",)),
    ("Latency p95", ("latency_p95_ms",)),
)
NONFINITE_MARK = "†"
RANGE_MARK = "‡"
SIGNIFICANT_MARK = "*"


# -- the data a section is made of --------------------------------------------------------------------------------
@dataclass
class Cell:
    text: str
    bold: bool = False
    title: str = ""  # a longer explanation (HTML tooltip)
    mark: str = ""  # a footnote mark shown after the (bold) text
    muted: bool = False  # greyed out: shown, not compared (a published figure computed with other settings)


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]


@dataclass
class Image:
    path: Path
    alt: str


@dataclass
class Text:
    text: str
    note: bool = False  # shown as a highlighted caveat


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    level: int = 2


def cell(x) -> Cell:
    return x if isinstance(x, Cell) else Cell(str(x))


def table(columns: list[str], rows: Iterable[Iterable]) -> Table:
    return Table(list(columns), [[cell(c) for c in r] for r in rows])


def fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:.0f}"
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.4f}"


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
            if vals.isna().all() and metric not in _method_metrics(ctx, method) and method not in ctx.failed:
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


def _method_metrics(ctx: Context, method: str) -> set[str]:
    v = ctx.run.videos
    return set(v.loc[v["method"] == method, "metric"])


def best_methods(ctx: Context, metric: str, methods: list[str]) -> set[str]:
    """The best candidate(s) for ``metric``, compared on the videos where every candidate has a finite value."""
    d = ctx.desc[metric]
    if d.higher_is_better is None or d.kind not in ("quality", "system") or d.input_side:
        return set()
    cands = [m for m in methods if ctx.ranked(m) and metric in _method_metrics(ctx, m)]
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
            if method == ref or metric not in _method_metrics(ctx, method):
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
    live = [m for m in ctx.methods if "drop_ratio" in _method_metrics(ctx, m)]
    if not live:
        return None
    present = set().union(*(_method_metrics(ctx, m) for m in live))
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


def our_settings(ctx: Context, method: str, metric: str) -> dict:
    """What a published figure's ``settings`` are compared with: the metric's settings, then the method's own
    (e.g. ``t_index_list``), then the run's (model, dtype, device, ...), plus what a published figure states in
    other words: ``gpu`` (the device's name), ``resolution`` (the frame size ``[H, W]`` that ran), ``denoising_steps`` and
    ``acceleration`` (``torch.compile`` with the method's ``compile``, else ``none``; never ``tensorrt``)."""
    run = next((s for s in ctx.run.settings.values() if s), {})
    prov = next((p for p in ctx.run.provenance.values() if p), {})
    derived: dict = {"gpu": (prov.get("device") or {}).get("gpu") or "none (cpu)"}
    size = (prov.get("frame_size") or {}).get("size")  # what ran (eval/frame_size.py), else the config's
    if size is None:
        size = ((prov.get("config") or {}).get("dataset") or {}).get("size")
    derived["resolution"] = list(size) if isinstance(size, (list, tuple)) else size
    settings = ctx.run.method_settings(method)
    method_cfg = {k: v for k, v in settings.items() if not isinstance(v, dict)}
    if isinstance(settings.get("t_index_list"), (list, tuple)):
        derived["denoising_steps"] = len(settings["t_index_list"])
        derived["acceleration"] = "torch.compile" if settings.get("compile") else "none"
    metric_cfg = ctx.desc[metric].config if metric in ctx.desc else {}
    return {**derived, **run, **method_cfg, **metric_cfg}


#: a published setting the source does not state (the figure can then never be compared)
NOT_STATED = ("not stated", None)


def _same(key: str, published, ours) -> bool:
    if key == "gpu" and isinstance(published, str) and isinstance(ours, str):
        return published.lower() in ours.lower()  # "RTX 4090" is "NVIDIA GeForce RTX 4090"
    if isinstance(published, (list, tuple)) and isinstance(ours, (list, tuple)):
        return list(published) == list(ours)
    return published == ours


def _settings_mismatch(published: dict, ours: dict) -> list[str]:
    return [
        f"{k} not stated by the source"
        if v in NOT_STATED
        else f"{k}: {v} published, {ours.get(k, 'unset')} ours"
        for k, v in published.items()
        if v in NOT_STATED or not _same(k, v, ours.get(k))
    ]


def not_compared(ctx: Context, r) -> str | None:
    """Why published figure ``r`` is not compared with ours (its cell greyed out), or None when it is: its settings
    must be stated, name the metric's ``variant`` when the metric has variants (warp errors: published scripts
    differ), equal ours on every key it states, and our values must be comparable (no random weights)."""
    if not r.settings:
        return "settings not stated"
    desc = ctx.desc.get(r.metric)
    if desc is not None and "variant" in desc.config and "variant" not in r.settings:
        return f"variant not stated (ours: {desc.config['variant']})"
    mism = _settings_mismatch(r.settings, our_settings(ctx, r.method, r.metric))
    if mism:
        return "; ".join(mism)
    if desc is not None and not desc.comparable:
        return "our values are not comparable (" + "; ".join(desc.notes) + ")"
    return None


def published_section(ctx: Context) -> Section | None:
    """Published | ours | Δ for every figure cited in ``report.reference`` (with its source); a cell where nothing
    is cited stays empty. A published figure that cannot be compared with ours (other settings, settings or variant
    not stated, our values not comparable) is shown greyed out with the reason, and no Δ is computed for it."""
    refs = ctx.run.references
    if not refs:
        return None
    metrics = list(dict.fromkeys(r.metric for r in refs))
    methods = list(dict.fromkeys([*ctx.methods, *(r.method for r in refs)]))
    t = ctx.table.set_index(["method", "metric"]) if not ctx.table.empty else None
    numbers = {id(r): i + 1 for i, r in enumerate(refs)}
    reasons = {id(r): not_compared(ctx, r) for r in refs}
    columns = ["method"]
    for m in metrics:
        h = ctx.desc[m].header if m in ctx.desc else m
        columns += [f"{h}: published", "ours", "Δ (ours − published)"]
    rows = []
    for method in methods:
        row = [Cell(ctx.label(method))]
        for metric in metrics:
            cited = [r for r in refs if r.method == method and r.metric == metric]
            ours = None
            if t is not None and (method, metric) in t.index:
                ours = float(t.loc[(method, metric), "mean"])
            pub, delta, why = [], [], []
            for r in cited:
                k = numbers[id(r)]
                if reasons[id(r)]:
                    pub.append(f"{fmt(r.value)} [{k}] (not compared)")
                    delta.append(f"not compared [{k}]")
                    why.append(f"[{k}] {reasons[id(r)]}")
                    continue
                pub.append(f"{fmt(r.value)} [{k}]")
                if ours is not None and math.isfinite(ours):
                    rel = f" ({(ours - r.value) / abs(r.value):+.0%})" if r.value else ""
                    delta.append(f"{'+' if ours >= r.value else ''}{fmt(ours - r.value)}{rel} [{k}]")
            muted = bool(cited) and all(reasons[id(r)] for r in cited)
            ours_cell = (
                interval_cell(ctx, method, metric) if ours is not None else Cell("not run" if cited else "")
            )
            title = "; ".join(why)
            row += [
                Cell("; ".join(pub), muted=muted, title=title),
                ours_cell,
                Cell("; ".join(delta), muted=muted, title=title),
            ]
        rows.append(row)
    blocks: list = [
        Text(
            "Figures published elsewhere (report.reference), each numbered by its source below; empty = not cited. "
            "A figure computed with other settings than ours (or not saying which) is shown greyed out, "
            '"not compared", with the reason below, and no Δ.'
        ),
        Table(columns, rows),
    ]
    src = []
    for i, r in enumerate(refs, start=1):
        stated = ", ".join(f"{k}={v}" for k, v in r.settings.items())
        if reasons[id(r)]:
            s = "NOT COMPARED — " + reasons[id(r)] + (f" (stated: {stated})" if stated else "")
        else:
            s = "settings match ours (" + stated + ")"
        src.append([str(i), f"{r.method} / {r.metric}", fmt(r.value), r.source, s])
    blocks.append(table(["#", "figure", "published", "source", "metric settings"], src))
    return Section("Published figures beside ours", blocks)


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
