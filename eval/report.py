"""Tables, plots and the report — functions of stored results only, so a report can be rebuilt (or several runs and
shards merged) without re-running anything::

    python -m eval.report RESULT_DIR [RESULT_DIR ...] [--out DIR] [--compare-to identity]

Writes ``summary.md``, ``per_method.csv``, ``per_video.csv``, ``paired.csv``, PNG plots and a self-contained
``report.html`` (images inlined) into ``--out`` (default: the first result dir).
"""

from __future__ import annotations

import argparse
import base64
import html
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from eval import results

log = logging.getLogger(__name__)


# -- loading ----------------------------------------------------------------------------------------------------
def load_results(dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Frames, videos, units and metric descriptions of the merged runs (eval/results.py owns the schema)."""
    r = results.load_runs(dirs)
    return r.frames, r.videos, r.units, {k: d.to_json() for k, d in r.metrics.items()}


# -- statistics -------------------------------------------------------------------------------------------------
def bootstrap_ci(
    values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI over videos (NaNs dropped). One value -> a zero-width interval."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size == 1 or n_boot <= 0:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = (1 - level) / 2
    return mean, float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def metric_order(desc: dict, present: list[str]) -> list[str]:
    quality = [m for m in present if desc.get(m, {}).get("kind") == "quality"]
    system = [m for m in present if desc.get(m, {}).get("kind") == "system"]
    rest = [m for m in present if m not in quality and m not in system]
    return quality + system + rest


def per_method_table(videos: pd.DataFrame, desc: dict, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (method, metric): mean and 95 % CI over videos."""
    rows = []
    for (method, metric), g in videos.groupby(["method", "metric"], sort=False):
        mean, lo, hi = bootstrap_ci(g["value"].to_numpy(), n_boot, seed)
        rows.append(
            {
                "method": method,
                "metric": metric,
                "mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "n_videos": int(np.isfinite(g["value"].to_numpy()).sum()),
            }
        )
    return pd.DataFrame(rows, columns=["method", "metric", "mean", "ci_low", "ci_high", "n_videos"])


def paired_table(videos: pd.DataFrame, reference: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per method and metric: mean over shared videos of (method − reference), with a bootstrap CI."""
    wide = videos.pivot_table(index=["video", "metric"], columns="method", values="value", aggfunc="first")
    if reference not in wide.columns:
        return pd.DataFrame(columns=["method", "metric", "diff", "ci_low", "ci_high", "n_videos"])
    rows = []
    for method in wide.columns:
        if method == reference:
            continue
        for metric, g in wide[[method, reference]].groupby(level="metric"):
            d = (g[method] - g[reference]).to_numpy()
            mean, lo, hi = bootstrap_ci(d, n_boot, seed)
            rows.append(
                {
                    "method": method,
                    "metric": metric,
                    "diff": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n_videos": int(np.isfinite(d).sum()),
                }
            )
    return pd.DataFrame(rows, columns=["method", "metric", "diff", "ci_low", "ci_high", "n_videos"])


# -- formatting -------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
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


def header(metric: str, desc: dict) -> str:
    d = desc.get(metric, {})
    arrow = {True: " ↑", False: " ↓"}.get(d.get("higher_is_better"), "")
    unit = f" ({d['unit']})" if d.get("unit") else ""
    return f"{d.get('display_name', metric)}{unit}{arrow}"


def summary_cells(
    table: pd.DataFrame, desc: dict
) -> tuple[list[str], list[str], list[list[str]], list[list[bool]]]:
    """Methods × metrics cells "mean ± half-CI" and which cell is best per metric."""
    methods = list(dict.fromkeys(table["method"]))
    metrics = metric_order(desc, list(dict.fromkeys(table["metric"])))
    cells, best = [], []
    idx = table.set_index(["method", "metric"])
    bests = {}
    for metric in metrics:
        hib = desc.get(metric, {}).get("higher_is_better")
        means = {m: idx.loc[(m, metric), "mean"] for m in methods if (m, metric) in idx.index}
        means = {m: v for m, v in means.items() if math.isfinite(v)}
        if hib is None or len(means) < 2 or len(set(means.values())) == 1:
            bests[metric] = set()
        else:
            target = (max if hib else min)(means.values())
            bests[metric] = {m for m, v in means.items() if v == target}
    for m in methods:
        row, brow = [], []
        for metric in metrics:
            if (m, metric) not in idx.index:
                row.append("–")
                brow.append(False)
                continue
            r = idx.loc[(m, metric)]
            half = (r["ci_high"] - r["ci_low"]) / 2
            cell = _fmt(r["mean"]) + (f" ± {_fmt(half)}" if math.isfinite(half) and half > 0 else "")
            row.append(cell)
            brow.append(m in bests[metric])
        cells.append(row)
        best.append(brow)
    return methods, metrics, cells, best


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def html_table(columns: list[str], rows: list[list[str]], bold: list[list[bool]] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        tds = []
        for j, c in enumerate(r):
            b = bold is not None and j > 0 and bold[i][j - 1]
            tds.append(f"<td>{'<b>' if b else ''}{html.escape(c)}{'</b>' if b else ''}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# -- plots ------------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality_vs_speed(table: pd.DataFrame, desc: dict, path: Path, speed: str = "latency_p50_ms") -> bool:
    quality = [
        m
        for m in metric_order(desc, list(dict.fromkeys(table["metric"])))
        if desc.get(m, {}).get("kind") == "quality"
    ]
    idx = table.set_index(["method", "metric"])
    if not quality or speed not in set(table["metric"]):
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(quality), figsize=(4.2 * len(quality), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], quality):
        for method in dict.fromkeys(table["method"]):
            if (method, metric) in idx.index and (method, speed) in idx.index:
                x, y = idx.loc[(method, speed)], idx.loc[(method, metric)]
                ax.errorbar(
                    x["mean"],
                    y["mean"],
                    yerr=[[y["mean"] - y["ci_low"]], [y["ci_high"] - y["mean"]]],
                    xerr=[[x["mean"] - x["ci_low"]], [x["ci_high"] - x["mean"]]],
                    fmt="o",
                    capsize=3,
                    label=method,
                )
        ax.set_xlabel(header(speed, desc))
        ax.set_ylabel(header(metric, desc))
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_over_time(frames: pd.DataFrame, metric: str, desc: dict, path: Path) -> bool:
    df = frames[frames["metric"] == metric]
    if df.empty:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for method, g in df.groupby("method", sort=False):
        m = g.groupby("frame")["value"].median()
        ax.plot(m.index, m.to_numpy(), label=method, lw=1.4)
    ax.set_xlabel("frame index")
    ax.set_ylabel(header(metric, desc) + " (median over videos)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- reported (paper / reference README) figures -----------------------------------------------------------------
def reference_rows(refs: list[dict], table: pd.DataFrame, desc: dict) -> list[list[str]]:
    idx = table.set_index(["method", "metric"])
    rows = []
    for r in refs:
        key = (r["method"], r["metric"])
        if key in idx.index:
            m = idx.loc[key]
            ours = f"{_fmt(m['mean'])} [{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
        else:
            ours = "not run"
        rows.append(
            [r["method"], header(r["metric"], desc), _fmt(float(r["value"])), ours, r.get("source", "")]
        )
    return rows


# -- the report -------------------------------------------------------------------------------------------------
def _b64(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def build_report(
    dirs: list[Path], out: Path, compare_to: str | None = "identity", n_boot: int = 2000, seed: int = 0
) -> Path:
    """Write the report for the results in ``dirs`` into ``out``; returns the path of ``summary.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = results.load_runs([Path(d) for d in dirs])
    frames, videos, units = run.frames, run.videos, run.units
    desc = {k: d.to_json() for k, d in run.metrics.items()}
    table = per_method_table(videos, desc, n_boot, seed)
    table.to_csv(out / "per_method.csv", index=False)
    wide = videos.pivot_table(index=["method", "video"], columns="metric", values="value", aggfunc="first")
    wide = wide[[c for c in metric_order(desc, list(wide.columns))]] if not wide.empty else wide
    wide.to_csv(out / "per_video.csv")
    paired = paired_table(videos, compare_to, n_boot, seed) if compare_to else pd.DataFrame()
    if not paired.empty:
        paired.to_csv(out / "paired.csv", index=False)

    md, body = [], []
    notes = run.all_notes()
    md.append("# live2diff-bench results\n")
    body.append("<h1>live2diff-bench results</h1>")
    md.append(
        f"Runs: {', '.join(sorted(set(units['run'])))} — {units['video'].nunique()} videos, "
        f"{units['method'].nunique()} methods. Mean ± half-width of the 95 % bootstrap CI over videos; "
        "↑/↓ = higher/lower is better; **bold** = best.\n"
    )
    body.append(f"<p>{html.escape(md[-1])}</p>")
    for note in notes:
        md.append(f"> **Note:** {note}\n")
        body.append(f"<p class='note'><b>Note:</b> {html.escape(note)}</p>")

    if not table.empty:
        methods, metrics, cells, best = summary_cells(table, desc)
        cols = ["method"] + [header(m, desc) for m in metrics]
        rows_md = [
            [m] + [f"**{c}**" if b else c for c, b in zip(r, br)] for m, r, br in zip(methods, cells, best)
        ]
        md += ["## Per method\n", markdown_table(cols, rows_md), ""]
        body += ["<h2>Per method</h2>", html_table(cols, [[m] + r for m, r in zip(methods, cells)], best)]

        if not paired.empty:
            prow = [
                [r.method, header(r.metric, desc), f"{_fmt(r.diff)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"]
                for r in paired.itertuples()
                if r.metric in metrics
            ]
            pcols = ["method", "metric", f"difference vs {compare_to} [95 % CI]"]
            md += [f"## Paired comparison against `{compare_to}`\n", markdown_table(pcols, prow), ""]
            body += [f"<h2>Paired comparison against {html.escape(compare_to)}</h2>", html_table(pcols, prow)]

        quality = [m for m in metrics if desc.get(m, {}).get("kind") == "quality"]
        shown = quality + [m for m in ("latency_p50_ms", "fps") if m in metrics]
        vrows = [
            [f"{m} / {v}"] + [_fmt(wide.loc[(m, v), k]) if k in wide.columns else "–" for k in shown]
            for m, v in wide.index
        ]
        vcols = ["method / video"] + [header(k, desc) for k in shown]
        md += ["## Per video\n", markdown_table(vcols, vrows), ""]
        body += ["<h2>Per video</h2>", html_table(vcols, vrows)]

    figures = []
    if plot_quality_vs_speed(table, desc, out / "quality_vs_speed.png"):
        figures.append(("Quality vs speed", "quality_vs_speed.png"))
    if plot_over_time(frames, "latency_ms", desc, out / "latency_over_time.png"):
        figures.append(("End-to-end latency over the stream", "latency_over_time.png"))
    for title, name in figures:
        md += [f"## {title}\n", f"![{title}]({name})", ""]
        body += [
            f"<h2>{html.escape(title)}</h2>",
            f"<img src='{_b64(out / name)}' alt='{html.escape(title)}'>",
        ]

    live_md, live_html = live_section(frames, videos, desc, out, n_boot, seed)
    md += live_md
    body += live_html

    strips = run.strips
    if strips:
        md.append("## Frame strips (input above, output below)\n")
        body.append("<h2>Frame strips (input above, output below)</h2>")
        for p in strips:
            rel = p.relative_to(out) if p.is_relative_to(out) else p
            md.append(f"**{p.parent.name} / {p.stem}**\n\n![{p.stem}]({rel})\n")
            body.append(f"<h3>{html.escape(p.parent.name)} / {html.escape(p.stem)}</h3><img src='{_b64(p)}'>")

    refs = [r.to_json() for r in run.references]
    if refs and not table.empty:
        rrows = reference_rows(refs, table, desc)
        rcols = ["method", "metric", "reported", "ours (95 % CI)", "source"]
        md += ["## Reported figures beside ours\n", markdown_table(rcols, rrows), ""]
        body += ["<h2>Reported figures beside ours</h2>", html_table(rcols, rrows)]

    failed = units[units["status"] == "error"]
    if not failed.empty:
        frows = [[r.method, r.video, r.error] for r in failed.itertuples()]
        md += [f"## Failed units ({len(failed)})\n", markdown_table(["method", "video", "reason"], frows), ""]
        body += [f"<h2>Failed units ({len(failed)})</h2>", html_table(["method", "video", "reason"], frows)]

    (out / "summary.md").write_text("\n".join(md) + "\n")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}.note{background:#fff4d6;padding:6px}"
    )
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>live2diff-bench report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
    return out / "summary.md"


# -- live mode --------------------------------------------------------------------------------------------------
LIVE_COLUMNS = ("source_fps", "output_fps", "drop_ratio", "lag_p50_ms", "lag_p95_ms")


def plot_lag_over_time(frames: pd.DataFrame, videos: pd.DataFrame, desc: dict, path: Path) -> bool:
    """Lag (arrival → emission) against arrival time, median over videos; dropped frames leave gaps."""
    lag = frames[frames["metric"] == "lag_ms"]
    if lag.empty:
        return False
    rate = videos[videos["metric"] == "source_fps"].groupby("method")["value"].median()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for method, g in lag.groupby("method", sort=False):
        m = g.groupby("frame")["value"].median().dropna()
        fps = float(rate.get(method, math.nan))
        x = m.index.to_numpy() / fps if math.isfinite(fps) and fps > 0 else m.index.to_numpy()
        ax.plot(x, m.to_numpy(), marker=".", ms=4, lw=1.2, label=method)
    ax.set_xlabel("arrival time (s)" if rate.size else "frame index")
    ax.set_ylabel("lag (ms), median over videos")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def live_section(
    frames: pd.DataFrame, videos: pd.DataFrame, desc: dict, out: Path, n_boot: int = 2000, seed: int = 0
) -> tuple[list[str], list[str]]:
    """The "Live" table (runner.mode=live results only) and the lag-over-time plot, as markdown and HTML parts."""
    live_methods = set(videos.loc[videos["metric"] == "drop_ratio", "method"])
    if not live_methods:
        return [], []
    sub = videos[videos["method"].isin(live_methods)]
    quality = [
        m
        for m in metric_order(desc, list(dict.fromkeys(sub["metric"])))
        if desc.get(m, {}).get("kind") == "quality"
    ]
    shown = [m for m in LIVE_COLUMNS if m in set(sub["metric"])] + quality
    table = per_method_table(sub[sub["metric"].isin(shown)], desc, n_boot, seed)
    methods, metrics, cells, best = summary_cells(table, desc)
    order = [metrics.index(m) for m in shown if m in metrics]
    cols = ["method"] + [header(metrics[i], desc) for i in order]
    rows = [[m] + [r[i] for i in order] for m, r in zip(methods, cells)]
    bold = [[b[i] for i in order] for b in best]
    rows_md = [[r[0]] + [f"**{c}**" if b else c for c, b in zip(r[1:], br)] for r, br in zip(rows, bold)]
    intro = (
        "Live mode: each video replayed at its frame rate; quality is scored on the frames a viewer sees "
        "(a dropped frame's slot shows the last output). Lag = arrival of a frame → emission of its output."
    )
    md = ["## Live\n", intro + "\n", markdown_table(cols, rows_md), ""]
    body = ["<h2>Live</h2>", f"<p>{html.escape(intro)}</p>", html_table(cols, rows, bold)]
    if plot_lag_over_time(frames, videos, desc, out / "lag_over_time.png"):
        md += ["## Live lag over the stream\n", "![Live lag over the stream](lag_over_time.png)", ""]
        body += [
            "<h2>Live lag over the stream</h2>",
            f"<img src='{_b64(out / 'lag_over_time.png')}' alt='Live lag over the stream'>",
        ]
    return md, body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", type=Path, help="result folders (runs or shards) to merge")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the first result folder)")
    p.add_argument("--compare-to", default="identity", help="reference method of the paired comparison")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = build_report(args.dirs, args.out or args.dirs[0], args.compare_to, args.bootstrap)
    except (FileNotFoundError, results.ResultsError) as exc:
        print(f"error: {exc}")
        return 2
    print(summary.read_text())
    print(f"report: {summary.parent / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
