"""The report's figures (PNG files); each returns False when there is nothing to draw."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _err(r: pd.Series) -> list[list[float]]:
    lo, hi = r["mean"] - r["ci_low"], r["ci_high"] - r["mean"]
    return [[lo if math.isfinite(lo) else 0.0], [hi if math.isfinite(hi) else 0.0]]


def quality_vs_speed(
    table: pd.DataFrame, desc: dict, quality: list[str], path: Path, speed="latency_p50_ms"
) -> bool:
    """One panel per quality metric against end-to-end latency (log scale), 95 % intervals as error bars."""
    if table.empty or not quality or speed not in set(table["metric"]):
        return False
    idx = table.set_index(["method", "metric"])
    plt = _plt()
    fig, axes = plt.subplots(1, len(quality), figsize=(4.2 * len(quality), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], quality):
        for method in dict.fromkeys(table["method"]):
            if (method, metric) in idx.index and (method, speed) in idx.index:
                x, y = idx.loc[(method, speed)], idx.loc[(method, metric)]
                ax.errorbar(
                    x["mean"], y["mean"], yerr=_err(y), xerr=_err(x), fmt="o", capsize=3, label=method
                )
        ax.set_xlabel(desc[speed].header)
        ax.set_ylabel(desc[metric].header)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def over_time(frames: pd.DataFrame, metric: str, desc: dict, path: Path) -> bool:
    df = frames[frames["metric"] == metric] if not frames.empty else frames
    if df.empty:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for method, g in df.groupby("method", sort=False):
        m = g.groupby("frame")["value"].median()
        ax.plot(m.index, m.to_numpy(), label=method, lw=1.4)
    ax.set_xlabel("frame index")
    ax.set_ylabel(desc[metric].header + " (median over videos)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def lag_over_time(frames: pd.DataFrame, videos: pd.DataFrame, path: Path) -> bool:
    """Lag (arrival → emission) against arrival time, median over videos; dropped frames leave gaps."""
    lag = frames[frames["metric"] == "lag_ms"] if not frames.empty else frames
    if lag.empty:
        return False
    rate = videos[videos["metric"] == "source_fps"].groupby("method")["value"].median()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for method, g in lag.groupby("method", sort=False):
        m = g.groupby("frame")["value"].median().dropna()
        fps = float(rate.get(method, math.nan))
        x = m.index.to_numpy() / fps if math.isfinite(fps) and fps > 0 else np.asarray(m.index)
        ax.plot(x, m.to_numpy(), marker=".", ms=4, lw=1.2, label=method)
    ax.set_xlabel("arrival time (s)" if rate.size else "frame index")
    ax.set_ylabel("lag (ms), median over videos")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
