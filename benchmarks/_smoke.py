"""``--smoke`` for every benchmark: the same code path at tiny sizes, in seconds, so that a test can run each script
end to end (a benchmark that crashes after minutes of measurement, writing its markdown, is a defect like any other).

A smoke run never writes over the recorded figures: unless ``--out`` is given it writes to
``benchmarks/results/smoke/`` (git-ignored). Values the user sets explicitly win over the smoke sizes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SMOKE_OUT = Path(__file__).resolve().parent / "results" / "smoke"


def add_smoke_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds: proves the script runs end to end (writes benchmarks/results/smoke/ unless --out)",
    )


def apply_smoke(
    ap: argparse.ArgumentParser, args: argparse.Namespace, small: dict, out: str | None = "out"
) -> argparse.Namespace:
    """With ``--smoke``, every option still at its parser default takes its value from ``small``; ``out`` (the
    name of the output option, None when the script has none) moves to ``benchmarks/results/smoke/``."""
    if not args.smoke:
        return args
    for key, value in small.items():
        if getattr(args, key) == ap.get_default(key):
            setattr(args, key, value)
    if out is not None and getattr(args, out) == ap.get_default(out):
        default = ap.get_default(
            out
        )  # the results folder itself, or a file stem inside it (``results/live_mode``)
        inside = default is not None and Path(default).resolve() != SMOKE_OUT.parent
        setattr(args, out, SMOKE_OUT / Path(default).name if inside else SMOKE_OUT)
    return args
