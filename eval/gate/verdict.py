"""Deciding: measured ratios against the reference's, one verdict per method, and the table that shows them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from eval.gate.measure import MethodTiming

EXIT_OK, EXIT_REGRESSION, EXIT_NO_REFERENCE = 0, 1, 3


@dataclass
class Verdict:
    method: str
    status: str  # ok | regression | faster | new | missing
    ratio: float = math.nan
    ref_ratio: float = math.nan
    change: float = math.nan  # relative change of the ratio vs the reference
    change_ms: float = math.nan  # the same change in ms at the current machine speed
    tolerance: float = math.nan
    frame_ms: float = math.nan
    spread: float = math.nan
    note: str = ""


def decide(
    current: dict[str, MethodTiming],
    reference: dict[str, dict],
    *,
    tolerance: float = 0.15,
    tolerances: dict[str, float] | None = None,
    min_change_ms: float = 0.0,
) -> list[Verdict]:
    """Compare measured ratios with reference ratios (``{name: {"ratio": r, ...}}``); pure, no timing."""
    tolerances = tolerances or {}
    out = []
    for name, t in current.items():
        tol = float(tolerances.get(name, tolerance))
        v = Verdict(name, "new", ratio=t.ratio, tolerance=tol, frame_ms=t.frame_ms_median, spread=t.spread)
        ref = reference.get(name)
        if ref is None or not (isinstance(ref.get("ratio"), (int, float)) and ref["ratio"] > 0):
            v.note = "not in the reference (run with --update-reference to add it)"
            out.append(v)
            continue
        v.ref_ratio = float(ref["ratio"])
        v.change = v.ratio / v.ref_ratio - 1
        v.change_ms = (v.ratio - v.ref_ratio) * t.calib_ms_median
        if v.change > tol and v.change_ms > min_change_ms:
            v.status = "regression"
        elif v.change > tol:
            v.status, v.note = "ok", f"slower by {v.change_ms:.3f} ms only (below gate.min_change_ms)"
        elif v.change < -tol:
            v.status, v.note = "faster", "consider --update-reference to lock in the gain"
        else:
            v.status = "ok"
        if math.isfinite(v.spread) and v.spread > tol:
            v.note = (v.note + "; " if v.note else "") + "noisy: repetitions spread more than the tolerance"
        out.append(v)
    for name in reference:
        if name not in current:
            out.append(
                Verdict(
                    name,
                    "missing",
                    ref_ratio=float(reference[name].get("ratio", math.nan)),
                    note="in the reference but not selected in this run",
                )
            )
    return out


def exit_status(verdicts: list[Verdict]) -> int:
    return EXIT_REGRESSION if any(v.status == "regression" for v in verdicts) else EXIT_OK


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else "–"


def _num(x: float, fmt: str = ".4g") -> str:
    return format(x, fmt) if math.isfinite(x) else "–"


def format_table(verdicts: list[Verdict]) -> str:
    mark = {"ok": "ok", "regression": "REGRESSION", "faster": "faster", "new": "new", "missing": "missing"}
    cols = ["method", "ref ratio", "ratio", "change", "tolerance", "frame ms", "spread", "verdict", "note"]
    rows = [
        [
            v.method,
            _num(v.ref_ratio),
            _num(v.ratio),
            _pct(v.change),
            f"{v.tolerance:.0%}" if math.isfinite(v.tolerance) else "–",
            _num(v.frame_ms, ".3f"),
            f"±{v.spread:.1%}" if math.isfinite(v.spread) else "–",
            mark[v.status],
            v.note,
        ]
        for v in verdicts
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda r: "| " + " | ".join(s.ljust(w) for s, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
